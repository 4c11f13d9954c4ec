"""`fwbench run` end to end: the CLI, the local launcher, real service processes, real gRPC."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator import launchers
from tests.conftest import fwbench

RUN_COLUMNS = [
    "run_id",
    "framework",
    "model",
    "repeat",
    "seed",
    "status",
    "epochs",
    "batch_size",
    "train_samples",
    "final_test_accuracy",
    "train_time_s",
    "total_time_s",
    "images_per_s",
    "time_to_first_step_s",
    "import_s",
    "build_s",
    "first_step_s",
    "step_time_median_s",
    "step_time_p90_s",
    "peak_gpu_mem_bytes",
    "peak_framework_mem_bytes",
    "mean_gpu_util_pct",
    "energy_j",
    "energy_method",
]
EPOCH_COLUMNS = [
    "run_id",
    "framework",
    "model",
    "epoch",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "train_time_s",
    "eval_time_s",
    "epoch_time_s",
    "between_epoch_overhead_s",
]
TELEMETRY_COLUMNS = [
    "run_id",
    "framework",
    "model",
    "t_s",
    "gpu_util_pct",
    "mem_util_pct",
    "mem_used_bytes",
    "power_w",
    "energy_j",
    "temp_c",
    "sm_clock_mhz",
    "rss_bytes",
    "cpu_pct",
]


def test_both_frameworks_train_and_every_file_is_written(tmp_path: Path):
    out = tmp_path / "run"
    # ~64 optimizer steps: BatchNorm's running statistics need about that many before eval-mode
    # accuracy leaves chance.
    result = fwbench(
        "run", "--frameworks", "pytorch,tensorflow", "--models", "mobilenet_v2",
        "--dataset", "synthetic", "--train-limit", "1024", "--test-limit", "256",
        "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    runs = pd.read_csv(out / "runs.csv")
    assert set(RUN_COLUMNS) <= set(runs.columns)
    assert sorted(runs["framework"]) == ["pytorch", "tensorflow"]
    assert (runs["status"] == "ok").all()
    assert (runs["train_samples"] == 1024).all()
    assert (runs["final_test_accuracy"] > 0.3).all(), runs[["framework", "final_test_accuracy"]]
    assert (runs["gpu"] == "none").all() and (runs["energy_method"] == "none").all()
    assert runs["peak_gpu_mem_bytes"].isna().all()  # absent, not a false 0
    assert (runs["time_to_first_step_s"] > runs["import_s"]).all()

    epochs = pd.read_csv(out / "epochs.csv")
    assert set(EPOCH_COLUMNS) <= set(epochs.columns)
    assert epochs.groupby("framework")["epoch"].apply(list).to_dict() == {
        "pytorch": [0, 1],
        "tensorflow": [0, 1],
    }
    spent = epochs["train_time_s"] + epochs["eval_time_s"] + epochs["between_epoch_overhead_s"]
    assert (spent - epochs["epoch_time_s"]).abs().max() < 1e-6

    telemetry = pd.read_csv(out / "telemetry.csv")
    assert set(TELEMETRY_COLUMNS) <= set(telemetry.columns)
    assert set(telemetry["framework"]) == {"pytorch", "tensorflow"}
    assert (telemetry["rss_bytes"] > 0).all()

    events = (out / "events.jsonl").read_text().splitlines()
    assert '"run_started"' in events[0] and '"run_end"' in events[-1]
    report = (out / "report.md").read_text()
    assert "## mobilenet_v2" in report and "| pytorch" in report.replace("|   pytorch", "| pytorch")
    assert "tensorflow" in report


def test_a_failed_run_is_recorded_and_the_exit_code_says_so(tmp_path: Path):
    out = tmp_path / "run"
    result = fwbench(
        "run", "--frameworks", "pytorch", "--models", "mobilenet_v2", "--device", "cuda",
        "--train-limit", "64", "--test-limit", "32", "--epochs", "1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 1
    runs = pd.read_csv(out / "runs.csv")
    assert runs.loc[0, "status"] == "failed"
    assert "INVALID_ARGUMENT" in runs.loc[0, "error"]
    assert "no CUDA device" in runs.loc[0, "error"]
    assert "Failed runs" in (out / "report.md").read_text()


def test_bad_input_is_a_clear_error_before_anything_starts(tmp_path: Path):
    result = fwbench("run", "--models", "resnet18", "--out", str(tmp_path / "x"), timeout_s=60)
    assert result.returncode == 2
    assert "model resnet18 not known; choose from resnet50, vgg19, mobilenet" in result.stderr

    # 0 must not silently become the default (in protobuf an unset 0 means "the default").
    result = fwbench("run", "--batch-size", "0", "--out", str(tmp_path / "x"), timeout_s=60)
    assert result.returncode == 2
    assert "--batch-size: must be >= 1, got 0" in result.stderr


def test_a_missing_environment_names_the_setup_command(tmp_path: Path):
    with (
        pytest.raises(launchers.LauncherError, match=r"\.venvs/jax.*make setup"),
        launchers.local(["jax"], tmp_path),
    ):
        pass
