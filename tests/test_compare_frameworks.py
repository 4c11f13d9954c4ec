"""`fwbench compare A B` where A and B trained different frameworks on the same job (on different
days or hosts): the framework verdict per model, with what else differs named at the top, and
no verdict where the jobs are not the same. The result sets are written by the real
ResultsWriter (tests/test_steady.py's Job); no framework runs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from orchestrator import report
from orchestrator.results import journal
from tests.test_steady import H200, Job

ROOT = Path(__file__).resolve().parents[1]
HOST = {"cpu_model": "AMD EPYC 9654", "cores": 16, "driver": "580.65", "gpus": []}
BUSY = {"steady": 95.0, "warm-up": 90.0}


def job(framework: str, step_s: float, repeat: int = 0, **changes) -> Job:
    return Job(
        framework,
        step_s=step_s,
        repeat=repeat,
        steps_per_epoch=120,
        first_step_s=1.0,
        busy_pct=BUSY,
        **changes,
    )


def result_set(directory: Path, jobs: list[Job], host: dict = HOST) -> Path:
    writer = journal.ResultsWriter(directory)
    writer.write_context({"frameworks": sorted({j.framework for j in jobs}), "host": host})
    for one in jobs:
        one.write(writer)
    writer.close()
    return directory


def repeats(framework: str, step_s: float, **changes) -> list[Job]:
    """Three repeats, their steps 1 % apart: an interval to judge by."""
    return [job(framework, step_s * (1 + 0.01 * r), r, **changes) for r in range(3)]


def test_a_pytorch_set_and_a_jax_set_of_one_job_give_the_framework_verdict_per_model(tmp_path):
    a = result_set(tmp_path / "monday", repeats("pytorch", 0.010))
    b = result_set(tmp_path / "tuesday", repeats("jax", 0.005))
    result = report.compare(a, b)
    (verdict,) = [line for line in result.verdict if line.startswith("mobilenet_v2 (tuned): ")]
    assert verdict.startswith("mobilenet_v2 (tuned): JAX steady-state 2.00× faster (95 % CI ")
    assert not any("Caveat" in line or "Not the same" in line for line in result.verdict)
    markdown = result.markdown_path.read_text()
    assert markdown.startswith("# fwbench compare: PyTorch (monday) vs JAX (tuesday)")
    assert "| mobilenet_v2 (tuned) | steady-state throughput (batch / median step) | JAX | 3 |" in (
        markdown
    )
    # The command prints the same verdict and exits 0.
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "compare", str(a), str(b)],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "400"},
        check=True,
    )
    assert verdict in done.stdout


def test_sets_from_different_hosts_say_so_at_the_top_before_the_verdict(tmp_path):
    a = result_set(tmp_path / "a", repeats("pytorch", 0.010))
    other_host = HOST | {"cpu_model": "Intel Xeon 8480+"}
    b_jobs = [dataclasses.replace(j, gpu=True) for j in repeats("jax", 0.005)]
    b = result_set(tmp_path / "b", b_jobs, other_host)
    # B's runs on another GPU: runs.csv's device_name and gpu say which.
    runs = (b / "runs.csv").read_text().replace(H200, "NVIDIA A100-SXM4-80GB")
    (b / "runs.csv").write_text(runs)
    result = report.compare(a, b)
    caveat = result.verdict[0]
    assert caveat.startswith("Caveat, device: the sets ran on different hardware: ")
    assert "device_name (A NVIDIA H200, B NVIDIA A100-SXM4-80GB)" in caveat
    assert "CPU (A AMD EPYC 9654, B Intel Xeon 8480+)" in caveat
    assert result.verdict[1].startswith("mobilenet_v2 (tuned): JAX steady-state 2.00× faster")


def test_every_other_knob_that_differs_is_named_with_both_values(tmp_path):
    a = result_set(tmp_path / "a", repeats("pytorch", 0.010))
    b = result_set(tmp_path / "b", repeats("jax", 0.005, epochs=3))
    result = report.compare(a, b)
    assert "Caveat, job: other knobs differ: epochs (A 2, B 3)" in result.verdict[0]
    markdown = result.markdown_path.read_text()
    assert "| epochs | 2 | 3 |" in markdown.split("## What differs between the two sets")[1]


def test_sets_with_no_model_in_common_get_no_verdict_and_are_told_so(tmp_path):
    a = result_set(tmp_path / "a", repeats("pytorch", 0.010))
    b = result_set(tmp_path / "b", repeats("jax", 0.005, model="resnet50"))
    result = report.compare(a, b)
    assert result.verdict == [
        "Not the same job: A trained mobilenet_v2 (tuned), B trained resnet50 (tuned) (model and "
        "mode); no model is in both, so there is no framework verdict to give. Run the same "
        "--models and --mode on both."
    ]


def test_two_sets_of_the_same_framework_still_compare_b_with_a(tmp_path):
    a = result_set(tmp_path / "before", repeats("pytorch", 0.010))
    b = result_set(tmp_path / "after", repeats("pytorch", 0.008))
    result = report.compare(a, b)
    assert result.verdict[0].startswith(
        "mobilenet_v2 (tuned), PyTorch: after steady-state 1.25× faster (after/before 1.25, "
    )
    assert "Every knob recorded in runs.csv is equal" in result.markdown_path.read_text()


def test_sets_trained_on_different_datasets_get_no_verdict_and_are_told_so(tmp_path):
    a = result_set(tmp_path / "a", repeats("pytorch", 0.010))
    b = result_set(tmp_path / "b", repeats("jax", 0.005))
    # B's runs read a prepared CIFAR-10 directory; A's synthetic images.
    runs = pd.read_csv(b / "runs.csv")
    runs["source"], runs["dataset"] = "directory", "data/cifar10"
    runs.to_csv(b / "runs.csv", index=False)
    result = report.compare(a, b)
    assert result.verdict[0] == (
        "Not the same data: A trained on synthetic, B on cifar10; speeds and accuracies on "
        "different data are no framework verdict. Run both on the same --dataset."
    )
    assert not any(line.startswith("mobilenet_v2") for line in result.verdict)
