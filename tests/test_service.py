"""The service runtime (services/common): validation, one run at a time, cancellation, health,
worker crashes and graceful shutdown — through a real gRPC server with real PyTorch workers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fwbench.v1 import trainer_pb2 as pb
from fwbench.v1 import trainer_pb2_grpc as pb_grpc
from tests.conftest import ROOT, tiny_spec, venv_python

# Every test here trains or serves through a framework environment.
pytestmark = pytest.mark.framework


def long_spec(**overrides) -> pb.TrainSpec:
    # Enough epochs that the run is certainly still going when the test acts on it.
    return tiny_spec(epochs=10_000, **overrides)


def workers() -> list[psutil.Process]:
    """Live worker processes under this test process (a zombie has exited: not counted)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "services.common.worker" in p.cmdline():
                found.append(p)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            pass
    return found


def wait_for_progress(stream) -> None:
    for event in stream:
        if event.WhichOneof("event") == "progress":
            return
    raise AssertionError("the run ended before any progress")


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("model__name", "resnet18", "model.name: 'resnet18' is not one of resnet50, vgg19"),
        ("batch_size", -1, "batch_size: must be > 0"),
        ("data__augment", "mixup", "data.augment: 'mixup' is not one of none, crop-flip"),
        ("device", "tpu", "device: 'tpu' is not one of auto, cpu, cuda"),
        ("precision", "fp8", "precision: 'fp8' is not one of fp32, tf32, bf16, fp16"),
        ("optimizer__name", "lion", "optimizer.name: 'lion' is not one of sgd, adam, adamw"),
        ("data__source", "directory", "data.data_dir: required when data.source is 'directory'"),
    ],
)
def test_invalid_spec_is_rejected_naming_the_field(stub, field, value, named):
    spec = tiny_spec(**{field: value})
    with pytest.raises(grpc.RpcError) as error:
        list(stub("pytorch").Train(pb.TrainRequest(spec=spec), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in error.value.details()


def test_one_run_at_a_time_health_keeps_serving_and_cancel_frees_within_2s(services, stub):
    trainer = stub("pytorch")
    first = trainer.Train(pb.TrainRequest(spec=long_spec(run_id="first")))
    wait_for_progress(first)

    with pytest.raises(grpc.RpcError) as busy:
        next(trainer.Train(pb.TrainRequest(spec=tiny_spec(run_id="second")), timeout=30))
    assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "'first' is already in progress" in busy.value.details()

    channel = grpc.insecure_channel(f"127.0.0.1:{services('pytorch').port}")
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="fwbench.v1.TrainerService"), timeout=5
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()

    assert len(workers()) == 1
    first.cancel()
    cancelled_at = time.monotonic()
    while workers() and time.monotonic() - cancelled_at < 5:
        time.sleep(0.05)
    assert not workers(), "the worker outlived the cancel"
    assert time.monotonic() - cancelled_at < 2.0

    # The slot is free again: a new run starts.
    again = trainer.Train(pb.TrainRequest(spec=tiny_spec(run_id="third")))
    assert next(again).WhichOneof("event") == "run_started"
    again.cancel()


def test_a_crashed_worker_is_internal_with_its_exit_and_the_server_survives(stub):
    trainer = stub("pytorch")
    stream = trainer.Train(pb.TrainRequest(spec=long_spec(run_id="crash")))
    wait_for_progress(stream)
    (worker,) = workers()
    worker.kill()
    with pytest.raises(grpc.RpcError) as error:
        list(stream)
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert "killed by signal SIGKILL" in error.value.details()
    # The server is fine and takes the next request.
    assert trainer.Describe(pb.DescribeRequest(), timeout=60).framework == "pytorch"


def test_sigterm_stops_the_server_gracefully_and_its_worker():
    server = subprocess.Popen(
        [
            venv_python("pytorch"),
            "-m",
            "services.common.server",
            "--framework",
            "pytorch",
            "--port",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = server.stdout.readline().rsplit(":", 1)[1].strip()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stream = pb_grpc.TrainerServiceStub(channel).Train(pb.TrainRequest(spec=long_spec()))
        wait_for_progress(stream)
        server_process = psutil.Process(server.pid)
        (worker,) = [
            p for p in server_process.children() if "services.common.worker" in p.cmdline()
        ]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
        with pytest.raises(grpc.RpcError):
            list(stream)
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        channel.close()
    finally:
        server.kill()


def test_describe_reports_the_framework_of_the_worker_environment(stub):
    described = stub("pytorch").Describe(pb.DescribeRequest(), timeout=60)
    assert described.framework == "pytorch"
    assert described.import_s > 0
    assert "cpu" in described.devices
    assert described.python_version.startswith(f"{sys.version_info.major}.")
