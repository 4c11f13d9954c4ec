"""`fwbench run` end to end: the CLI, the local launcher, real service processes, real gRPC."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from orchestrator.results import schema
from orchestrator.running import launchers
from services.common import frameworks
from tests.conftest import ROOT, fwbench

# Every test here trains or serves through a framework environment.
pytestmark = pytest.mark.framework


# The demo's frameworks in `make test`; all of them in `make test-slow`.
@pytest.mark.parametrize(
    "names",
    [
        pytest.param(("pytorch", "tensorflow"), id="demo-frameworks"),
        pytest.param(frameworks.NAMES, marks=pytest.mark.slow, id="every-framework"),
    ],
)
def test_every_framework_trains_and_every_file_is_written(tmp_path: Path, names):
    out = tmp_path / "run"
    # The smallest run with two epochs: that each framework learns is test_frameworks' job
    # (test_training_beats_chance_in_eval_mode); this one is about the CLI and the files.
    result = fwbench(
        "run", "--frameworks", ",".join(names), "--models", "mobilenet",
        "--dataset", "synthetic", "--train-limit", "128", "--test-limit", "64",
        "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns) == list(schema.RUN_COLUMNS)
    assert sorted(runs["framework"]) == sorted(names)
    assert (runs["status"] == "ok").all()
    assert (runs["train_samples"] == 128).all()
    assert runs["final_test_accuracy"].between(0, 1).all(), runs["final_test_accuracy"]
    assert (runs["gpu"] == "none").all() and (runs["energy_method"] == "none").all()
    assert runs["peak_gpu_mem_bytes"].isna().all()  # absent, not a false 0
    assert (runs["time_to_first_step_s"] > runs["import_s"]).all()

    epochs = pd.read_csv(out / "epochs.csv")
    assert list(epochs.columns) == list(schema.EPOCH_COLUMNS)
    assert epochs.groupby("framework")["epoch"].apply(list).to_dict() == {
        name: [0, 1, 2]
        for name in names  # epoch 0: the baseline, before training
    }
    spent = epochs["train_time_s"] + epochs["eval_time_s"] + epochs["between_epoch_overhead_s"]
    assert (spent - epochs["epoch_time_s"]).abs().max() < 1e-6

    telemetry = pd.read_csv(out / "telemetry.csv")
    assert list(telemetry.columns) == list(schema.TELEMETRY_COLUMNS)
    assert set(telemetry["framework"]) == set(names)
    assert (telemetry["rss_bytes"] > 0).all()

    # The journal: per run its spec, its events from RunStarted to RunEnd, then its outcome.
    journal = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [r["run_id"] for r in journal if "spec" in r] == list(runs["run_id"])
    first_run = [r for r in journal if r["run_id"] == runs["run_id"][0]]
    assert "spec" in first_run[0] and "run_started" in first_run[1]
    assert "run_end" in first_run[-2] and first_run[-1]["outcome"]["status"] == "ok"
    report = (out / "report.md").read_text()
    assert "## mobilenet" in report
    assert all(frameworks.get(name).title in report for name in names)
    # Single runs on the same test images: their accuracies compared image by image.
    assert "McNemar exact p" in report


def test_a_failed_run_is_recorded_and_the_exit_code_says_so(tmp_path: Path):
    # The worker of the first run dies (SIGKILL, as the OOM killer sends it); the run is recorded
    # failed with the cause, the next run still trains, and the exit code says 1.
    out = tmp_path / "out"
    command = [ROOT / ".venvs" / "orchestrator" / "bin" / "fwbench", "run"]
    command += ["--frameworks", "pytorch", "--models", "mobilenet", "--repeats", "2"]
    # The first run is killed as soon as its worker exists, before it has imported PyTorch.
    command += ["--train-limit", "256", "--test-limit", "32", "--epochs", "1", "--out", out]
    fwbench_process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while not (workers := _workers("train", fwbench_process.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers, "no training worker appeared"
    workers[0].kill()
    output, _ = fwbench_process.communicate(timeout=600)
    assert fwbench_process.returncode == 1, output
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["failed", "ok"]
    assert "killed by signal SIGKILL" in runs.loc[0, "error"]
    assert "Runs that did not finish" in (out / "report.md").read_text()


def _workers(task: str, ancestor: int) -> list[psutil.Process]:
    """Workers of this task (train, debug, ...) started by `ancestor`'s services (not anyone
    else's on the host)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "services.common.worker" in cmdline and task in cmdline:
            with contextlib.suppress(psutil.NoSuchProcess):
                if ancestor in {p.pid for p in process.parents()}:
                    found.append(process)
    return found


def test_bad_input_is_a_clear_error_before_anything_starts(tmp_path: Path):
    result = fwbench("run", "--models", "resnet18", "--out", str(tmp_path / "x"), timeout_s=60)
    assert result.returncode == 2
    assert "model resnet18 not known; choose from resnet50, vgg19, mobilenet" in result.stderr

    # 0 must not silently become the default (in protobuf an unset 0 means "the default").
    result = fwbench("run", "--batch-size", "0", "--out", str(tmp_path / "x"), timeout_s=60)
    assert result.returncode == 2
    assert "--batch-size: must be >= 1, got 0" in result.stderr

    # No GPU here: refused before any service starts, and no results directory is left.
    result = fwbench("run", "--device", "cuda", "--out", str(tmp_path / "gpu"), timeout_s=60)
    assert result.returncode == 2
    assert "--device cuda: this machine has no NVIDIA GPU" in result.stdout
    assert not (tmp_path / "gpu").exists()


def test_a_missing_environment_names_the_setup_command(tmp_path: Path):
    with (
        pytest.raises(launchers.LauncherError, match=r"\.venvs/mxnet.*make setup"),
        launchers.local(["mxnet"], tmp_path),
    ):
        pass
