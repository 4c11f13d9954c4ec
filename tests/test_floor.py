"""The hardware-floor section: floor.csv (benchmarks/floor.py) beside a result set's runs, in the
report (canned GPU set, tests/data/report/gpu: PyTorch and TensorFlow, ResNet50, default mode):
fast, no framework runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from orchestrator.report import render

DATA = Path(__file__).parent / "data" / "report" / "gpu"
DEVICE = "NVIDIA H100 80GB HBM3"
CUDA_GRAPH = "whole step in one CUDA graph, median of 200 replays (CUDA events)"


def floor_row(**row) -> dict:
    return {
        "model": "resnet50",
        "batch_size": 32,
        "precision": "fp32",
        "device_name": DEVICE,
        "step_ms_median": 5.0,
        "step_ms_p90": 5.1,
        "method": CUDA_GRAPH,
    } | row


def with_floor(tmp_path: Path, *rows: dict, tuned_scale: dict[str, float] | None = None) -> Path:
    """The canned set with floor.csv of `rows`; with tuned_scale ({framework: factor}), every run
    again in the tuned mode, its step median scaled by its framework's factor."""
    out = tmp_path / "gpu"
    shutil.copytree(DATA, out)
    pd.DataFrame(rows).to_csv(out / "floor.csv", index=False)
    if tuned_scale is not None:
        runs = pd.read_csv(out / "runs.csv").assign(mode="default")
        tuned = runs.assign(
            mode="tuned",
            run_id=runs["run_id"] + "-tuned",
            step_time_median_s=runs["step_time_median_s"] * runs["framework"].map(tuned_scale),
        )
        pd.concat([runs, tuned]).to_csv(out / "runs.csv", index=False)
    return out


def report(results: Path) -> str:
    return render(results).markdown_path.read_text()


def test_a_floor_csv_without_a_framework_column_is_pytorchs_and_only_pytorch_is_compared(tmp_path):
    markdown = report(with_floor(tmp_path, floor_row()))
    assert "## Against the hardware floor" in markdown
    assert f"PyTorch: {CUDA_GRAPH}" in markdown  # how, as measured
    # PyTorch's six finished runs: step medians 12.4 12.5 12.6 12.7 12.8 20.0 ms -> 12.65 ms.
    assert "| resnet50 | PyTorch | default | 6 | 12.65 ms | 5.00 ms | 2.53× |" in markdown
    assert "| resnet50 | TensorFlow | default |" not in markdown
    assert "Between frameworks" not in markdown  # one framework's floor: nothing to set beside


def test_each_framework_is_given_as_a_multiple_of_its_own_floor(tmp_path):
    markdown = report(
        with_floor(
            tmp_path,
            floor_row(framework="pytorch"),
            floor_row(framework="tensorflow", step_ms_median=4.5, method="XLA, 32 per execution"),
        )
    )
    assert "TensorFlow: XLA, 32 per execution" in markdown
    assert "| resnet50 | PyTorch | default | 6 | 12.65 ms | 5.00 ms | 2.53× |" in markdown
    # TensorFlow's six: 13.3 13.4 13.5 13.5 13.6 13.7 ms -> 13.50 ms, over its own 4.50 ms.
    assert "| resnet50 | TensorFlow | default | 6 | 13.50 ms | 4.50 ms | 3.00× |" in markdown


def test_frameworks_are_set_beside_each_other_at_the_floor_and_in_each_mode(tmp_path):
    markdown = report(
        with_floor(
            tmp_path,
            floor_row(framework="pytorch"),
            floor_row(framework="tensorflow", step_ms_median=4.5),
            tuned_scale={"pytorch": 0.4, "tensorflow": 0.36},
        )
    )
    # Floors 4.50 / 5.00 ms; default 13.50 / 12.65 ms; tuned 4.86 / 5.06 ms.
    assert "| resnet50 | TensorFlow / PyTorch | 0.90× | 0.96× | 1.07× |" in markdown
    assert "| resnet50 | PyTorch | tuned | 6 | 5.06 ms | 5.00 ms | 1.01× |" in markdown


def test_a_floor_from_another_gpu_or_batch_is_never_compared(tmp_path):
    markdown = report(with_floor(tmp_path, floor_row(device_name="NVIDIA H200")))
    assert "No finished run matches a floor's framework, device, batch size and precision" in (
        markdown
    )
    assert "× floor |\n|" not in markdown
