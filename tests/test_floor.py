"""The hardware-floor section: floor.csv (benchmarks/floor.py) beside a result set's runs, in the
report (canned GPU set, tests/data/report/gpu): fast, no framework runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from orchestrator.report import render

DATA = Path(__file__).parent / "data" / "report" / "gpu"


def with_floor(tmp_path: Path, **row) -> Path:
    out = tmp_path / "gpu"
    shutil.copytree(DATA, out)
    floor = {
        "model": "resnet50",
        "batch_size": 32,
        "precision": "fp32",
        "device_name": "NVIDIA H100 80GB HBM3",
        "step_ms_median": 5.0,
        "step_ms_p90": 5.1,
        "method": "whole step in one CUDA graph, median of 200 replays (CUDA events)",
    } | row
    pd.DataFrame([floor]).to_csv(out / "floor.csv", index=False)
    return out


def test_each_framework_is_given_as_a_multiple_of_the_floor(tmp_path):
    markdown = render(with_floor(tmp_path)).markdown_path.read_text()
    assert "## Against the hardware floor" in markdown
    assert "whole step in one CUDA graph, median of 200 replays" in markdown  # how, as measured
    # PyTorch's six finished runs: step medians 12.4 12.5 12.6 12.7 12.8 20.0 ms -> 12.65 ms.
    assert "| resnet50 | PyTorch | default | 6 | 12.65 ms | 5.00 ms | 2.53× |" in markdown
    assert "| resnet50 | TensorFlow | default | 6 | 13.50 ms | 5.00 ms | 2.70× |" in markdown


def test_a_floor_from_another_gpu_or_batch_is_never_compared(tmp_path):
    markdown = render(with_floor(tmp_path, device_name="NVIDIA H200")).markdown_path.read_text()
    assert "No finished run matches the floor's device, batch size and precision" in markdown
    assert "× floor |\n|" not in markdown
