"""Fixtures shared by the test suite.

The suite runs in .venvs/orchestrator (no framework). Framework code is exercised through real
services: an in-process gRPC server whose workers run in the framework's own virtualenv, or the
local launcher's service processes. Nothing we own is mocked.

Tests that need a framework environment carry the `framework` marker, so that `make check` (the
fast tier: `-m "not framework and not slow"`) starts none; the helpers below that reach a framework
fail a test that lacks the marker, so the tiers cannot drift.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest

from fwbench.v1 import trainer_pb2 as pb
from fwbench.v1 import trainer_pb2_grpc as pb_grpc
from services.common import frameworks, server
from services.common.spec import with_defaults

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = frameworks.NAMES
_marked_framework = False


def pytest_configure(config):
    # One JAX compilation cache for the session (JAX_COMPILATION_CACHE_DIR, inherited by every
    # service and worker the tests start): each distinct program is still compiled once, by the
    # first test that needs it; the many tests that train the same tiny job skip recompiling it.
    # Fresh each session, so nothing compiled by older code is ever reused. The runs record it
    # (settings' compilation_cache).
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        cache = tempfile.mkdtemp(prefix="fwbench-tests-jax-cache-")
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
        # JAX caches only programs that took a second or more to compile by default.
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def pytest_runtest_setup(item):
    # Before any fixture of the test is set up, module- and session-scoped ones included.
    global _marked_framework
    _marked_framework = item.get_closest_marker("framework") is not None


def pytest_runtest_teardown(item):
    global _marked_framework
    _marked_framework = False


def needs_framework() -> None:
    """Fails the current test unless it is marked `framework` (it is about to start one)."""
    if not _marked_framework:
        pytest.fail("this test starts a framework: mark it @pytest.mark.framework")


SHARED_CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def once_in_make_test(values, *kept: str) -> list:
    """Parameters of a matrix whose behaviour `make test` proves once, with the `kept` values;
    the rest of the matrix is marked `slow` (`make test-slow`, which CI runs too)."""
    return [v if v in kept else pytest.param(v, marks=pytest.mark.slow) for v in values]


def fwbench(*args, timeout_s: float = 900) -> subprocess.CompletedProcess:
    """The real `fwbench` entry point in a subprocess, so its exit code and output are checked.
    COLUMNS: rich wraps at 80 columns when not on a terminal."""
    return subprocess.run(
        [ROOT / ".venvs" / "orchestrator" / "bin" / "fwbench", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=os.environ | {"COLUMNS": "1000"},
    )


def venv_python(framework: str) -> str:
    needs_framework()
    path = ROOT / ".venvs" / framework / "bin" / "python"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` first")
    return str(path)


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """Lazily started in-process services, one per framework: services("pytorch") -> Service.
    They may read datasets under the repository's data/ and under the tests' temporary
    directories (tests of confinement start services of their own)."""
    started: dict[str, server.Service] = {}
    roots = (server.DEFAULT_DATA_ROOT, tmp_path_factory.getbasetemp())

    def get(framework: str) -> server.Service:
        needs_framework()
        if framework not in started:
            started[framework] = server.start(
                framework, python=venv_python(framework), data_roots=roots
            )
        return started[framework]

    yield get
    for service in started.values():
        service.stop()


@pytest.fixture(scope="session")
def stub(services):
    """stub("pytorch") -> a TrainerService stub of that framework's in-process service."""
    channels = []

    def get(framework: str) -> pb_grpc.TrainerServiceStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{services(framework).port}")
        channels.append(channel)
        return pb_grpc.TrainerServiceStub(channel)

    yield get
    for channel in channels:
        channel.close()


@pytest.fixture(scope="session")
def described(stub):
    """described("pytorch") -> its DescribeResponse, asked once per session."""
    cache: dict[str, pb.DescribeResponse] = {}

    def get(framework: str) -> pb.DescribeResponse:
        needs_framework()
        if framework not in cache:
            cache[framework] = stub(framework).Describe(pb.DescribeRequest(), timeout=120)
        return cache[framework]

    return get


@pytest.fixture(scope="session")
def trained_once(stub):
    """trained_once(framework, spec) -> every event of a run of spec, telemetry included. Each
    distinct (framework, spec) trains once per session, whichever tests ask for it: a run's
    fresh worker alone costs seconds, and the answer to the same request is the same run."""
    runs: dict[tuple[str, bytes], list[pb.TrainEvent]] = {}

    def get(framework: str, spec: pb.TrainSpec) -> list[pb.TrainEvent]:
        needs_framework()
        key = (framework, spec.SerializeToString(deterministic=True))
        if key not in runs:
            runs[key] = list(stub(framework).Train(pb.TrainRequest(spec=spec), timeout=900))
        return runs[key]

    return get


# Model parity's probe (tests/test_parity.py), which other tests of Inspect read too: the
# training batch size (BatchNorm statistics over fewer images make gradients more sensitive to
# rounding) and two steps, so that the second loss follows one update.
PARITY_PROBE_BATCH = 32
PARITY_TRAIN_STEPS = 2


def parity_request(model: str, architecture: str = "canonical", **overrides) -> pb.InspectRequest:
    """The parity check's Inspect of model: canonical models from the shared initial weights and
    trained for PARITY_TRAIN_STEPS; library models with their framework's own, untrained."""
    canonical = architecture == "canonical"
    spec = tiny_spec(
        model,
        model__architecture=architecture,
        model__init="shared" if canonical else "framework",
        **overrides,
    )
    return pb.InspectRequest(
        spec=spec,
        probe_batch_size=PARITY_PROBE_BATCH,
        train_steps=PARITY_TRAIN_STEPS if canonical else 0,
    )


@pytest.fixture(scope="session")
def inspected(stub):
    """inspected(model, architecture, frameworks) -> {framework: ModelReport} of parity_request,
    each framework asked once per session (a fresh worker builds, and TensorFlow traces, the
    model: ~10 s on 2 cores)."""
    reports: dict[tuple[str, str, str], pb.ModelReport] = {}

    def get(
        model: str, architecture: str = "canonical", frameworks=FRAMEWORKS
    ) -> dict[str, pb.ModelReport]:
        needs_framework()
        for framework in frameworks:
            if (model, architecture, framework) not in reports:
                request = parity_request(model, architecture)
                reports[model, architecture, framework] = stub(framework).Inspect(
                    request, timeout=600
                )
        return {f: reports[model, architecture, f] for f in frameworks}

    return get


@pytest.fixture(scope="session")
def saved_run(tmp_path_factory) -> Path:
    """One real `fwbench run`, as small as runs go (PyTorch, MobileNetV2, synthetic data, 64
    images, one epoch, CPU), that saves its trained model with --save-weights (into
    `checkpoints` beside it): test_weights starts the other frameworks from that checkpoint, and
    test_interruptions cuts and rebuilds its result set as a kill -9 leaves one. Once per
    session: a run costs seconds of worker start-up (~9 s on 2 cores)."""
    needs_framework()
    base = tmp_path_factory.mktemp("saved")
    out = base / "run"
    result = fwbench(
        "run", "--frameworks", "pytorch", "--models", "mobilenet_v2", "--dataset", "synthetic",
        "--train-limit", "64", "--test-limit", "64", "--batch-size", "32", "--epochs", "1",
        "--device", "cpu", "--lr", "0.05", "--save-weights", base / "checkpoints", "--out", out,
        timeout_s=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def tiny_spec(model: str = "mobilenet", **overrides) -> pb.TrainSpec:
    """A small CPU run: synthetic data, few samples, one epoch, defaults for the rest. MobileNet:
    of the four models, the quickest to build and compile in every framework."""
    spec = pb.TrainSpec(
        run_id="test",
        model=pb.ModelSpec(name=model),
        data=pb.DataSpec(source="synthetic", train_limit=64, test_limit=32),
        epochs=1,
        batch_size=32,
        device="cpu",
    )
    for field, value in overrides.items():
        target = spec
        *path, last = field.split("__")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return with_defaults(spec)


@pytest.fixture(scope="session")
def real_cifar(tmp_path_factory) -> Path:
    """The shared archive prepared once per session (about 15 s on 2 cores), for every test that
    trains on real images (test_data, test_suite)."""
    if not SHARED_CIFAR.exists():
        pytest.skip(f"real CIFAR-10 archive not present at {SHARED_CIFAR}")
    out = tmp_path_factory.mktemp("real") / "cifar10-jpeg"
    done = fwbench("data", "prepare", "--source", SHARED_CIFAR, "--out", out, timeout_s=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out
