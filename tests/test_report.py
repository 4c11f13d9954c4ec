"""The report, rendered from canned result sets (tests/data/report/, see generate.py there): no
framework runs, so these belong to the fast tier."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from orchestrator import report
from orchestrator.report import analysis, provenance, resultset
from orchestrator.results import schema
from tests.test_stats import T_975

DATA = Path(__file__).parent / "data" / "report"
PARITY = report.Section(
    "Model parity", "| model | parameters |\n|---|---:|\n| resnet50 | 23,528,522 |"
)


def rendered(name: str, tmp_path_factory, sections=()) -> tuple[report.Report, str, str]:
    out = tmp_path_factory.mktemp(name)
    result = report.render(DATA / name, out, sections=sections)
    return result, result.markdown_path.read_text(), result.html_path.read_text()


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    return rendered("gpu", tmp_path_factory, [PARITY])


@pytest.fixture(scope="module")
def cpu(tmp_path_factory):
    return rendered("cpu", tmp_path_factory)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    return rendered("three", tmp_path_factory)


def test_every_section_is_present_verdict_first(gpu):
    _, markdown, html = gpu
    headings = re.findall(r"^##+ (.+)$", markdown, flags=re.MULTILINE)
    assert headings == [
        "Verdict",
        "Warnings",
        "What this means for your job",
        "resnet50 (default)",
        "Model parity",
        "Statistics",
        "Per epoch",
        "Runs that did not finish",
        "Provenance",
        "Settings that differ between frameworks",
        "Settings equal in every framework",
        "The job (runs.csv)",
        "Dataset",
        "Host",
        "Method",
    ]
    for chart in (
        "Accuracy and loss per epoch",
        "Throughput: steady state and end to end",
        "Time to first step",
        "Over time (GPU)",
        "Step time per window",
        "Peak memory",
        "GPU energy per 1,000 training images, steady state",
    ):
        assert f"<strong>{chart}.</strong>" in html and html.count("<svg") == 7
    assert html.index('id="verdict"') < html.index('id="model-resnet50-default"')


def test_the_stylesheet_is_inlined_unescaped(gpu):
    _, _, html = gpu
    style = html.split("<style>")[1].split("</style>")[0]
    assert ".verdict > ul > li" in style and '"Segoe UI"' in style


def test_a_caller_section_is_rendered_as_a_real_table(gpu):
    _, _, html = gpu
    section = html[html.index('id="extra-model-parity"') :]
    assert re.search(r"<table>\s*<thead>", section)
    assert '<td style="text-align: right;">23,528,522</td>' in section


def test_header_carries_provenance(gpu):
    _, markdown, _ = gpu
    header = markdown.split("## Verdict")[0]
    for fact in (
        "2026-11-26T12:00:00+00:00",
        "fwbench 0.1.0 · 0123456789ab (clean)",
        "`fwbench run --frameworks pytorch,tensorflow --models resnet50",
        "Intel(R) Xeon(R) Platinum 8480+, 16 cores, 128 GiB RAM",
        "1 × NVIDIA H100 80GB HBM3, driver 580.159.04",
        "PyTorch 2.11.0 · TensorFlow 2.21.0",
        "data/cifar10, 50,000 training / 10,000 test images · 2 epochs · batch 32 · 7 repeat(s)",
    ):
        assert fact in header


def test_statistics_match_a_hand_computation(gpu):
    # Common repeats 0,1,2,3,5; PyTorch's steps 0.0126 .0125 .0127 .0124 .0200 are trimmed to
    # .0125 .0126 .0127 (mean .0126, sd .0001); TensorFlow's to .0134 .0135 .0136.
    (model,) = analysis.analyse(resultset.load(DATA / "gpu"))
    step = model.summaries["step_time_median_s"]["pytorch"]
    half = T_975[2] * 0.0001 / math.sqrt(3)
    assert step.n == 3 and step.mean == pytest.approx(0.0126)
    assert (step.ci_low, step.ci_high) == (
        pytest.approx(0.0126 - half),
        pytest.approx(0.0126 + half),
    )
    # Steady-state ratio PyTorch/TensorFlow: exp(mean log(32/pt) - mean log(32/tf)).
    logs_pt = [math.log(32 / s) for s in (0.0125, 0.0126, 0.0127)]
    logs_tf = [math.log(32 / s) for s in (0.0134, 0.0135, 0.0136)]
    expected = math.exp(sum(logs_pt) / 3 - sum(logs_tf) / 3)
    ratio = model.ratios["steady_state_images_per_s"]["tensorflow"]
    assert ratio.ratio == pytest.approx(expected) and ratio.detected
    _, markdown, _ = gpu
    assert "| steady-state step, median | 12.6 ms (12.4–12.8) | 13.5 ms (13.3–13.7) |" in markdown


def test_both_frameworks_are_trimmed_alike_on_the_repeats_both_finished(gpu):
    (model,) = analysis.analyse(resultset.load(DATA / "gpu"))
    assert {f: sorted(r.repeat) for f, r in model.runs.items()} == {
        "pytorch": [0, 1, 2, 3, 5],
        "tensorflow": [0, 1, 2, 3, 5],
    }
    for column in ("step_time_median_s", "total_time_s", "final_test_accuracy"):
        assert {s.n for s in model.summaries[column].values()} == {3}
    # PyTorch's slow outlier (repeat 5, 20 ms) is the trimmed maximum, not in the mean.
    assert model.summaries["step_time_median_s"]["pytorch"].mean == pytest.approx(0.0126)
    result, markdown, _ = gpu
    assert any("left out (PyTorch: 1, TensorFlow: 1); n = 5" in w for w in result.verdict)
    assert "each metric drops its lowest and highest value on every side alike" in markdown


def test_a_single_run_never_claims_a_spread(cpu):
    result, markdown, html = cpu
    assert "±" not in markdown + html and "std" not in markdown
    table = markdown.split("## mobilenet_v2")[1].split("Accuracy, PyTorch")[0]
    rows = [line for line in table.splitlines() if line.startswith("| steady-state step")]
    assert rows[0].startswith("| steady-state step, median | 79.4 ms | 77.3 ms | 1.03 |")
    stats_rows = [
        r for r in markdown.splitlines() if r.startswith("| mobilenet_v2 (default) | steady")
    ]
    assert stats_rows and all(r.endswith("| – | – |") for r in stats_rows)
    assert "single run: no interval" in result.verdict[0]


def test_the_headline_throughput_is_steady_state(cpu):
    # The CPU run: TensorFlow's 8.8 s first step makes PyTorch 3.8x faster end to end and 7.5x
    # by images_per_s, while the steady-state steps are 79.4 vs 77.3 ms.
    result, markdown, _ = cpu
    headline = result.verdict[0]
    assert headline.startswith("mobilenet_v2 (default): TensorFlow steady-state 1.03× faster")
    assert "3.82" not in headline and "7.5" not in headline
    assert "TensorFlow needs 9.2 s more before its first step (11.5 vs 2.3 s)" in headline
    assert "| end-to-end throughput (images / total time) | 140 img/s | 36.8 img/s |" in markdown


def test_accuracy_within_test_set_noise_is_said_at_small_test_sets(cpu, gpu):
    noise = "accuracy is within test-set noise"
    result, _, _ = cpu
    assert "no difference detected (+1.6 points, 95 % CI -8.2 to +11.3" in result.verdict[0]
    assert any(noise in w and "at 128 test images" in w for w in result.verdict)
    result, _, _ = gpu
    assert not any(noise in w for w in result.verdict)


def test_warnings_say_what_applies(cpu, gpu):
    cpu_warnings = " ".join(cpu[0].verdict[1:])
    gpu_warnings = " ".join(gpu[0].verdict[1:])
    assert "Synthetic data" in cpu_warnings and "Synthetic data" not in gpu_warnings
    assert "a single repeat" in cpu_warnings and "a single repeat" not in gpu_warnings
    assert "host-bound: PyTorch (GPU busy 47 % in steady state" in gpu_warnings
    assert "--batch-size" in gpu_warnings
    assert "host-bound" not in cpu_warnings
    assert "PyTorch 1× diverged, TensorFlow 1× failed" in gpu_warnings


def test_numerics_that_differ_between_frameworks_are_said_side_by_side_per_mode(tmp_path):
    # The three frameworks as they ship on a GPU with TF32 (default mode, precision native), and
    # all in TF32 (tuned mode, precision tf32): only the default mode's numerics differ.
    results = tmp_path / "results"
    shutil.copytree(DATA / "three", results)
    runs = pd.read_csv(results / "runs.csv")
    native = runs["mode"] == "default"
    pytorch = runs["framework"] == "pytorch"
    runs["precision"] = native.map({True: "native", False: "tf32"})
    runs["tf32_matmul"] = (~(native & pytorch)).map({True: "true", False: "false"})
    runs["tf32_conv"] = "true"
    runs.to_csv(results / "runs.csv", index=False)
    warnings = [w for w in report.render(results, tmp_path / "out").verdict if "Numerics" in w]
    assert warnings == [
        "Numerics differ between the frameworks (mode default, precision native): TF32 in "
        "float32 matrix products: PyTorch false, TensorFlow true, JAX true. Their speeds and "
        "accuracies compare each framework's own float32 arithmetic; --precision fp32 (strict) "
        "or tf32 gives every framework the same (Provenance lists every recorded setting side by "
        "side)."
    ]
    # Numerics alike, or not recorded (an older set): nothing to say.
    assert not [
        w for w in report.render(DATA / "three", tmp_path / "old").verdict if "Numerics" in w
    ]


def test_errors_are_shown_verbatim(gpu):
    _, markdown, html = gpu
    assert "worker exited with code -9 (out of memory?) [/job:localhost]" in html
    assert "loss became NaN in epoch 2 | step 113" in html
    assert "\\[/job:localhost\\]" in markdown  # escaped for markdown, shown as written


def test_cpu_runs_chart_cpu_and_memory_instead_of_the_gpu(cpu):
    _, markdown, html = cpu
    assert "Over time (CPU-only run: worker CPU and memory)" in html
    assert "worker CPU (100 = one core)" in html and "GPU busy (NVML)" not in html
    assert "13.0 (not used: CPU run)" in markdown  # PyTorch's CUDA build, unused


def test_more_frameworks_are_ratios_against_the_first_and_modes_are_never_pooled(three):
    result, markdown, _ = three
    assert "## mobilenet_v2 (default)" in markdown and "## mobilenet_v2 (tuned)" in markdown
    assert "| metric | PyTorch | TensorFlow | JAX | PyTorch / TensorFlow (95 % CI) |" in markdown
    assert "PyTorch / JAX (95 % CI)" in markdown
    verdicts = [v for v in result.verdict if " vs " in v.split(":")[0]]
    assert len(verdicts) == 4
    assert verdicts[1].startswith("mobilenet_v2 (default), PyTorch vs JAX: JAX steady-state 1.33×")


def test_a_default_jax_run_comes_with_why_its_step_is_slow_and_a_set_without_one_does_not(
    three, gpu
):
    _, markdown, _ = three
    assert "### Notes on the modes" in markdown
    assert "On every call `nnx.jit` walks those objects' graph in Python" in markdown
    assert '"Performance considerations"' in markdown
    assert "Notes on the modes" not in gpu[1]


def test_missing_files_read_as_not_recorded(three):
    _, markdown, _ = three
    assert "**Run started** not recorded · fwbench version not recorded" in markdown
    assert "host not recorded" in markdown and "Over time" not in markdown


def test_dataset_checksums_come_from_the_prepared_directory(tmp_path):
    results, data = tmp_path / "results", tmp_path / "cifar10"
    shutil.copytree(DATA / "gpu", results)
    data.mkdir()
    meta = {
        "name": "cifar10",
        "train_count": 50_000,
        "test_count": 10_000,
        "arrays": {"train_images": {"sha256": "ab" * 32}, "test_images": {"sha256": "cd" * 32}},
        "provenance": {"source": {"sha256": "ef" * 32}},
    }
    (data / "meta.json").write_text(json.dumps(meta))
    runs = (results / "runs.csv").read_text().replace("data/cifar10", str(data))
    (results / "runs.csv").write_text(runs)
    markdown = report.render(results, tmp_path / "out").markdown_path.read_text()
    assert (
        "50,000 training / 10,000 test images used of 50,000 / 10,000; sha256 test\\_images "
        "`cdcdcdcdcdcdcdcd…`, train\\_images `abababababababab…`; "
        "source sha256 `efefefefefefefef…`."
    ) in markdown
    elsewhere = report.render(DATA / "gpu", tmp_path / "out2").markdown_path.read_text()
    assert "checksums not recorded here (no meta.json found" in elsewhere


def test_library_models_are_labelled_in_the_runs_own_words(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(DATA / "cpu", results)
    label = "library models — not identical"
    runs = (results / "runs.csv").read_text()
    runs = runs.replace(
        ",canonical,canonical (identical in every framework),", f",library,{label},"
    )
    (results / "runs.csv").write_text(runs)
    result = report.render(results, tmp_path / "out")
    expected = f"Model definitions: {label}. Each framework trained its own library's model"
    assert any(line.startswith(expected) for line in result.verdict)
    assert "Model definitions" not in " ".join(report.render(DATA / "cpu", tmp_path).verdict)


def test_render_writes_report_md_and_html_and_nothing_else(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(DATA / "cpu", results)
    before = sorted(p.name for p in results.iterdir())
    out = tmp_path / "elsewhere"
    result = report.render(results, out)
    assert result.markdown_path == out / "report.md"
    assert sorted(p.name for p in results.iterdir()) == before
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md"]
    assert report.render(results).html_path == results / "report.html"


def test_a_directory_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(report.ResultSetError, match=r"holds no runs.csv: give the directory"):
        report.render(tmp_path)


def test_a_directory_of_sections_only_is_reported_without_a_verdict(tmp_path):
    friction = report.Section(
        "Install friction", "| framework | venv size |\n|---|---:|\n| a | 1 |"
    )
    result = report.render(tmp_path, sections=[friction])
    markdown = result.markdown_path.read_text()
    assert "## Install friction" in markdown and "holds no training runs" in markdown
    assert result.verdict == ["This directory holds no training runs: only the sections below."]


def test_the_html_needs_nothing_from_outside(gpu, cpu):
    for _, _, html in (gpu, cpu):
        assert "://" not in html  # no URL at all: no CDN, no font, no image
        assert not re.search(r"<script|<link|<img|<iframe|@import|url\((?!#)", html)
        for target in re.findall(r'href="([^"]*)"', html):
            assert target.startswith("#") or not re.match(r"^[a-z]+:", target), target


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (run scripts/ensure-chromium)"
)
@pytest.mark.parametrize("width", [1280, 390])
def test_the_html_opens_in_headless_chromium_and_is_not_blank(gpu, tmp_path, width):
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            f"--window-size={width},1600",
            f"--screenshot={shot}",
            gpu[0].html_path.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        env=os.environ | {"HOME": str(tmp_path)},
    )
    image = Image.open(shot).convert("L")
    assert image.size == (width, 1600)
    dark = sum(image.histogram()[:128]) / (image.width * image.height)
    # Text, tables and the verdict box: a blank or unstyled-error page has (almost) no ink.
    assert dark > 0.01
    assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20


def test_provenance_collects_this_checkout_and_host():
    facts = provenance.collect()
    git = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=DATA, check=True
    )
    assert facts["fwbench"]["git_commit"] == git.stdout.strip()
    assert facts["fwbench"]["git_dirty"] in (True, False)
    assert facts["host"]["cores"] == os.cpu_count()
    assert facts["host"]["memory_bytes"] > 0 and "cpu_model" in facts["host"]
    assert facts["utc_start"].endswith("+00:00")


def test_runs_over_several_devices_get_a_row_per_device_and_others_none(tmp_path):
    results = tmp_path / "gpu"
    shutil.copytree(DATA / "gpu", results)
    assert "## Devices" not in report.render(results, tmp_path / "one").markdown_path.read_text()
    runs = pd.read_csv(results / schema.RUNS_CSV)
    run_id = "resnet50-pytorch-r0"
    runs.loc[runs["run_id"] == run_id, "gpus"] = 2
    runs.to_csv(results / schema.RUNS_CSV, index=False)
    telemetry = pd.read_csv(results / schema.TELEMETRY_CSV)
    second = telemetry[telemetry["run_id"] == run_id].assign(device_index=1, gpu_util_pct=10.0)
    pd.concat([telemetry, second]).to_csv(results / schema.TELEMETRY_CSV, index=False)
    markdown = report.render(results, tmp_path / "two").markdown_path.read_text()
    devices = markdown.split("## Devices")[1].split("\n## ")[0]
    rows = [line for line in devices.splitlines() if line.startswith(f"| {run_id}")]
    first = telemetry[telemetry["run_id"] == run_id]
    assert [re.split(r"\s*\|\s*", row)[4:7] for row in rows] == [
        ["0", str(len(first)), f"{first['gpu_util_pct'].mean():.1f}"],
        ["1", str(len(first)), "10.0"],
    ]
    # The chart over time draws the first device, one line; its mean is that device's.
    telemetry_chart = markdown.split("Over time (GPU)")[1]
    assert "of a run over several devices, its first device" in telemetry_chart
    assert f"GPU busy (NVML) PyTorch {first['gpu_util_pct'].mean():,.1f} %" in telemetry_chart
