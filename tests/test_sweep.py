"""sweep(): throughput and GPU utilisation against batch size, over result sets made from the
canned GPU set (tests/data/report/gpu) at several batch sizes: fast, no framework runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from orchestrator import report
from orchestrator.cli import main
from orchestrator.report import batch_sweep

DATA = Path(__file__).parent / "data" / "report" / "gpu"
# PyTorch's step time does not change with the batch up to 128 (host-bound: throughput doubles
# with each doubling), then doubles with it (device-bound); TensorFlow's doubles from the start.
PYTORCH_STEP_S = {32: 0.010, 64: 0.010, 128: 0.010, 256: 0.020}
TENSORFLOW_STEP_S = {32: 0.010, 64: 0.020, 128: 0.040, 256: 0.080}
UTIL_PCT = {32: 30.0, 64: 55.0, 128: 90.0, 256: 97.0}


def result_set(tmp_path: Path, batch: int, **changes) -> Path:
    out = tmp_path / f"batch-sweep-{batch:03d}"
    shutil.copytree(DATA, out)
    runs = pd.read_csv(out / "runs.csv")
    runs["batch_size"] = batch
    steps = runs["framework"].map({"pytorch": PYTORCH_STEP_S, "tensorflow": TENSORFLOW_STEP_S})
    ok = runs["status"] == "ok"
    runs.loc[ok, "step_time_median_s"] = [s[batch] for s in steps[ok]]
    for column, value in changes.items():
        runs[column] = value
    runs.to_csv(out / "runs.csv", index=False)
    # The windows keep their times at the new batch (more images each), and the GPU is busy
    # UTIL_PCT in training: the sweep reads steady-state busy.
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    for record in records:
        if "progress" in record:
            record["progress"]["images_per_s"] *= batch / 32
    (out / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    telemetry = pd.read_csv(out / "telemetry.csv")
    training = telemetry["gpu_util_pct"] > 20  # the canned set's busy in evaluation
    telemetry.loc[training, "gpu_util_pct"] = UTIL_PCT[batch]
    telemetry.to_csv(out / "telemetry.csv", index=False)
    return out


@pytest.fixture
def swept(tmp_path):
    dirs = [result_set(tmp_path, b) for b in (256, 32, 128, 64)]  # any order: sorted by batch
    return report.sweep(dirs, tmp_path / "sweep")


def test_the_sweep_names_the_batch_from_which_the_host_stops_being_the_limit(swept):
    pytorch, tensorflow = swept.verdict
    assert pytorch.startswith("resnet50 (default), PyTorch: 3,200 img/s at batch 32 → 12,800")
    assert "(4.00×)" in pytorch and "GPU busy in steady state 30.0 % → 97.0 %" in pytorch
    assert "from batch 128 on, a larger batch adds under 11 %" in pytorch
    assert "TensorFlow: 3,200 img/s at batch 32 → 3,200 img/s at 256 (1.00×)" in tensorflow
    assert "already at batch 32 a larger batch adds under 11 %" in tensorflow


def test_the_table_gives_each_batch_its_throughput_gain_and_utilisation(swept):
    markdown = swept.markdown_path.read_text()
    rows = re.findall(r"^\| PyTorch \| (\d+) \| ([\d,]+) img/s \| ([\d.]+) ms \| ([–\d.]+) \| "
                      r"([\d.]+) % \| (\d+) \|$", markdown, flags=re.MULTILINE)  # fmt: skip
    assert rows == [
        ("32", "3,200", "10.0", "–", "30.0", "6"),
        ("64", "6,400", "10.0", "1.00", "55.0", "6"),
        ("128", "12,800", "10.0", "1.00", "90.0", "6"),
        ("256", "12,800", "20.0", "0.00", "97.0", "6"),
    ]


def test_the_page_charts_throughput_and_utilisation_against_batch(swept):
    html = swept.html_path.read_text()
    assert (
        "<strong>resnet50 (default): throughput and GPU utilisation against batch size.</strong>"
        in html
    )
    assert html.count("<svg") == 1
    for batch in ("32", "64", "128", "256"):
        assert f">{batch}<" in html or f"{batch}</text>" in html


def test_throughput_that_still_grows_at_the_largest_batch_says_so():
    line = pd.DataFrame({"batch_size": [32, 64, 128], "gain": [float("nan"), 0.9, 0.5]})
    assert batch_sweep.saturation_batch(line) is None
    line = pd.DataFrame({"batch_size": [32, 64, 128], "gain": [float("nan"), 0.05, 0.5]})
    assert batch_sweep.saturation_batch(line) is None  # a later gain undoes an early plateau


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"learning_rate": 0.1},
            "differ in learning_rate (0.01 vs 0.1), not only in the batch size",
        ),
        ({"mode": "tuned"}, "differ in mode"),
        # Every knob runs.csv records counts, the data limits too: fewer images, other speeds.
        ({"train_limit": 512}, "differ in train_limit (– vs 512)"),
    ],
)
def test_sets_that_differ_in_more_than_the_batch_are_refused(tmp_path, changes, message):
    dirs = [result_set(tmp_path, 32), result_set(tmp_path, 64, **changes)]
    with pytest.raises(report.ResultSetError, match=re.escape(message)):
        report.sweep(dirs, tmp_path / "sweep")
    assert not (tmp_path / "sweep" / "sweep.md").exists()


def test_one_set_or_two_of_one_batch_are_refused_by_the_command_line(tmp_path, capsys):
    one = result_set(tmp_path, 32)
    with pytest.raises(SystemExit) as exited:
        main(["sweep", str(one), "--out", str(tmp_path / "sweep")])
    assert exited.value.code == 2
    assert (
        "a sweep needs two or more result sets of different batch sizes" in capsys.readouterr().out
    )
    twin = tmp_path / "twin"
    shutil.copytree(one, twin)
    with pytest.raises(SystemExit) as exited:
        main(["sweep", str(one), str(twin), "--out", str(tmp_path / "sweep")])
    assert exited.value.code == 2
    assert "both hold batch 32: give one result set per batch size" in capsys.readouterr().out
