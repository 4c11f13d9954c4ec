"""The benchmarks run, at tiny sizes on the CPU, and print what they promise: overhead.py a ratio
per ABBA pair and their spread, floor.py a step time per framework and model and a CSV the report
reads. Their numbers are not checked here (a CPU shared with other work says nothing about
fwbench's cost); that each number is the quotient, median or statistic it claims to be is.

The batch-sweep suite files are checked to be one sweep: alike but for the batch size."""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.inputs import suite_file
from services.common import frameworks
from tests.conftest import ROOT, once_in_make_test, venv_python

PAIR = re.compile(
    r"pair (\d+) \((service, bare|bare, service)\): service +([\d.]+) ms +bare +([\d.]+) ms +"
    r"ratio ([\d.]+)"
)
SUMMARY = re.compile(
    r"(\w+) mobilenet (\w+) \(cpu\): ratio service/bare median ([\d.]+) "
    r"\(min–max ([\d.]+)–([\d.]+), IQR ([\d.]+)–([\d.]+), (\d+) pairs\), best of \d+ ([\d.]+)"
)


def overhead(*args: str) -> subprocess.CompletedProcess:
    # The orchestrator's interpreter, as a person runs it: the bare loops run in the frameworks'.
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.overhead", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.framework
@pytest.mark.parametrize(
    ("framework", "mode", "pairs"),
    [
        ("pytorch", "default", 2),
        # The same harness with TensorFlow's bare loop, tuned: XLA and 32 steps per execution,
        # the loop's general case (default is the same loop at 1 step per execution).
        pytest.param("tensorflow", "tuned", 1, marks=pytest.mark.slow),
    ],
)
def test_overhead_prints_each_pairs_ratio_in_abba_order_and_the_median_with_its_spread(
    framework, mode, pairs
):
    venv_python(framework)  # the environment exists (or the test says how to make it)
    # 20 steps of MobileNet at batch 32: windows after the 10 warm-up steps on 2 CPU cores;
    # tuned TensorFlow runs 32 steps per execution, so 40 steps: an epoch that is not a whole
    # number of executions.
    train_limit = "1280" if mode == "tuned" else "640"
    # Pinned to the CPUs it may use anyway: the pin reaches the service and the bare loops.
    cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    done = overhead(
        "--frameworks", framework, "--models", "mobilenet", "--train-limit", train_limit,
        "--pairs", str(pairs), "--modes", mode, "--cpus", cpus,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"CPUs [{cpus.replace(',', ', ')}]:" in done.stdout
    found = PAIR.findall(done.stdout)
    assert [(int(i), order) for i, order, *_ in found] == [
        (0, "service, bare"),
        (1, "bare, service"),
    ][:pairs]
    ratios = []
    for *_, service_ms, bare_ms, ratio in found:
        assert float(service_ms) > 0 and float(bare_ms) > 0
        assert float(ratio) == pytest.approx(float(service_ms) / float(bare_ms), abs=2e-3)
        ratios.append(float(ratio))
    summary = SUMMARY.search(done.stdout)
    assert summary, done.stdout
    name, mode_printed, median, low, high, q1, q3, count, best = summary.groups()
    assert (name, mode_printed, int(count)) == (framework, mode, pairs)
    assert float(median) == pytest.approx(statistics.median(ratios), abs=2e-3)
    assert float(low) == pytest.approx(min(ratios), abs=2e-3)
    assert float(high) == pytest.approx(max(ratios), abs=2e-3)
    assert float(low) <= float(q1) <= float(median) <= float(q3) <= float(high)
    service = [float(service_ms) for *_, service_ms, _, _ in found]
    bare = [float(bare_ms) for *_, bare_ms, _ in found]
    assert float(best) == pytest.approx(min(service) / min(bare), abs=2e-3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-limit", "320"], "--train-limit 320 makes fewer than 12 steps of batch 32"),
        (
            ["--frameworks", "pytorch,jax"],
            "jax not known",
        ),
        (["--models", "resnet18"], "model resnet18 not known; choose from resnet50"),
        (["--pairs", "0"], "--pairs must be at least 1, not 0"),
        (["--modes", "fast"], "mode fast not known; choose from default, tuned"),
        (["--cpus", "100000"], "CPUs [100000] are not available to this process"),
        (["--cpus", "four"], "'four' is not a CPU list such as 4-7 or 0,2"),
    ],
)
def test_overhead_refuses_bad_options_before_anything_starts(args, message):
    done = overhead(*args)
    assert done.returncode == 2
    assert message in done.stderr


def floor(*args: str) -> subprocess.CompletedProcess:
    # The orchestrator's interpreter, as a person runs it: each floor runs in its framework's.
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.floor", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.framework
def test_floor_without_a_gpu_exits_2_saying_it_needs_one(tmp_path):
    done = floor("--frameworks", "pytorch,jax", "--models", "mobilenet", "--out", str(tmp_path))
    if "needs a CUDA GPU" not in done.stderr and done.returncode == 0:
        pytest.skip("this host has a GPU: floor.py measured it")
    assert done.returncode == 2
    # Each framework says it, in its own words.
    assert done.stderr.count("benchmarks.floor needs a CUDA GPU") == 2, done.stderr[-3000:]
    assert "PyTorch sees no CUDA device" in done.stderr
    assert "JAX sees no GPU" in done.stderr
    assert not (tmp_path / "floor.csv").exists()


# Each framework's floor is its own code; `make test` runs PyTorch's, `make test-slow` the rest.
@pytest.mark.framework
@pytest.mark.parametrize("framework", once_in_make_test(frameworks.NAMES, "pytorch"))
def test_floor_on_the_cpu_runs_each_frameworks_code_and_labels_it_a_check_not_a_floor(
    tmp_path, framework
):
    # 7 classes: the head is the one asked for, not one taken from a dataset the floor lacks.
    # Two steps per call: JAX's and TensorFlow's loop of several steps, kept short on the CPU.
    done = floor(
        "--frameworks", framework, "--device", "cpu", "--models", "mobilenet",
        "--batch-size", "8", "--replays", "2", "--steps-per-call", "2", "--num-classes", "7",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [row] = list(csv.DictReader((tmp_path / "floor.csv").open()))
    assert row["framework"] == framework
    assert (row["model"], row["batch_size"], row["device_name"]) == ("mobilenet", "8", "cpu")
    assert row["method"].endswith("on the CPU: a check of the code, not a floor")
    assert 0 < float(row["step_ms_median"]) <= float(row["step_ms_p90"])
    assert (
        f"{framework:10} {'mobilenet':13} batch 8: {float(row['step_ms_median']):.2f} ms/step"
        in done.stdout
    )
    assert METHOD_SAYS[framework] in row["method"]


# How each framework's floor steps, in its method's words: PyTorch one eager step at a time on
# the CPU (its CUDA graph needs a GPU), the others several steps per call.
METHOD_SAYS = {
    "pytorch": "eager step, median of 2",
    "tensorflow": "2 steps per execution",
    "jax": "2 steps per dispatch",
}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frameworks", "pytorch,mxnet"], "framework (with a benchmarks/floors/<name>.py) mxnet"),
        (["--models", "resnet18"], "model resnet18 not known; choose from resnet50"),
        (["--steps-per-call", "0"], "--steps-per-call must be at least 1, not 0"),
    ],
)
def test_floor_refuses_bad_options_before_any_framework_starts(args, message):
    done = floor(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_the_batch_sweep_is_one_suite_per_batch_size_alike_but_for_it():
    files = sorted((ROOT / "suites" / "batch-sweep").glob("*.yaml"))
    suites = [suite_file.load(Path(f)) for f in files]
    assert [s.spec["batch_size"] for s in suites] == [32, 64, 128, 256, 512]
    assert len({s.name for s in suites}) == len(suites)
    for s in suites:
        assert s.frameworks == list(frameworks.NAMES)
        assert {k: v for k, v in s.spec.items() if k != "batch_size"} == {
            k: v for k, v in suites[0].spec.items() if k != "batch_size"
        }
        assert (s.models, s.repeats, s.spec["epochs"]) == (
            suites[0].models,
            suites[0].repeats,
            suites[0].spec["epochs"],
        )
