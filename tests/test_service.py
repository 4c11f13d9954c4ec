"""The service runtime (services/common): validation, one request at a time, cancellation, health,
worker crashes, graceful shutdown, data confinement, stalled clients and reflection — through a
real gRPC server with real PyTorch workers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from fwbench.v1 import trainer_pb2 as pb
from fwbench.v1 import trainer_pb2_grpc as pb_grpc
from services.common import limits, server
from services.common.worker import MESSAGE_MAX_CHARS, Worker, WorkerError, own_cgroups
from tests.conftest import ROOT, tiny_spec, venv_python
from tests.test_spec import prepared

# Every test here trains or serves through a framework environment.
pytestmark = pytest.mark.framework


def long_spec(**overrides) -> pb.TrainSpec:
    # Enough epochs that the run is certainly still going when the test acts on it.
    return tiny_spec(epochs=1000, **overrides)


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
        ("batch_size", -1, "batch_size: must be in 2..65536, got -1"),
        ("epochs", 0, "epochs: must be in 1..1000, got 0"),
        ("optimizer__learning_rate", math.inf, "optimizer.learning_rate: must be a finite"),
        ("optimizer__weight_decay", math.nan, "optimizer.weight_decay: must be a finite"),
        ("model__num_classes", 3, "model.num_classes: 3 does not match the 10 classes"),
        ("data__train_limit", 50_001, "50001 is more than the 50000 train samples"),
        ("data__augment", "mixup", "data.augment: 'mixup' is not one of none, crop-flip"),
        ("device", "tpu", "device: 'tpu' is not one of auto, cpu, cuda"),
        ("precision", "fp8", "precision: 'fp8' is not one of native, fp32, tf32, bf16, fp16"),
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


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"probe_batch_size": -1}, "probe_batch_size: must be in 1..1024, got -1"),
        ({"train_steps": -5}, "train_steps: must be in 0..1000, got -5"),
        ({"train_steps": 10**6}, "train_steps: must be in 0..1000, got 1000000"),
    ],
)
def test_invalid_inspect_is_rejected_naming_the_field(stub, fields, named):
    with pytest.raises(grpc.RpcError) as error:
        stub("pytorch").Inspect(pb.InspectRequest(spec=tiny_spec(), **fields), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in error.value.details()


def test_an_oversized_request_is_refused_before_it_is_read(stub):
    with pytest.raises(grpc.RpcError) as error:
        next(stub("pytorch").Train(pb.TrainRequest(spec=tiny_spec(run_id="x" * 2**21)), timeout=30))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_one_request_at_a_time_health_keeps_serving_and_cancel_frees_within_2s(services, stub):
    trainer = stub("pytorch")
    first = trainer.Train(pb.TrainRequest(spec=long_spec(run_id="first")))
    wait_for_progress(first)

    with pytest.raises(grpc.RpcError) as busy:
        next(trainer.Train(pb.TrainRequest(spec=tiny_spec(run_id="second")), timeout=30))
    assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "run 'first' is in progress" in busy.value.details()
    # Describe and Inspect would start a worker beside the measured run: refused as well.
    for call in (
        lambda: trainer.Describe(pb.DescribeRequest(), timeout=30),
        lambda: trainer.Inspect(pb.InspectRequest(spec=tiny_spec()), timeout=30),
    ):
        with pytest.raises(grpc.RpcError) as busy:
            call()
        assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "run 'first' is in progress" in busy.value.details()

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


def test_calls_that_end_while_their_worker_starts_leave_the_slot_free():
    # A deadline of a few milliseconds passes while the worker is started, before the call has
    # registered what frees the slot: gRPC never ran that, and the slot stayed taken for good
    # (every later request RESOURCE_EXHAUSTED, "a Describe request is in progress").
    service = server.start("pytorch", python=venv_python("pytorch"))
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    trainer = pb_grpc.TrainerServiceStub(channel)
    try:
        for attempt in range(20):
            with contextlib.suppress(grpc.RpcError):
                trainer.Describe(pb.DescribeRequest(), timeout=0.001 + attempt * 0.0005)
        deadline = time.monotonic() + 5  # the last one's worker is being stopped meanwhile
        while True:
            try:
                assert trainer.Describe(pb.DescribeRequest(), timeout=60).framework == "pytorch"
                break
            except grpc.RpcError as busy:
                if busy.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        channel.close()
        service.stop()


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


def test_a_worker_error_of_any_length_reaches_the_client_its_start_and_end_kept():
    # A gRPC client refuses a status trailer over 16 KiB, which lost the real error once (a
    # 140 KB Flax message arrived as "Stream removed"). An unknown task of 50,000 characters
    # makes the worker's error message that long.
    task = "x" * 25_000 + "y" * 25_000
    worker = Worker("pytorch", task, b"", python=venv_python("pytorch"))
    with pytest.raises(WorkerError) as raised:
        worker.response()
    message = raised.value.message
    assert len(message) <= MESSAGE_MAX_CHARS
    assert message.startswith("unknown worker task 'xxx") and message.endswith("yyy'")
    assert "characters left out; the service's log has all" in message


def test_sigterm_stops_the_server_gracefully_and_its_worker_with_unavailable():
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
        with pytest.raises(grpc.RpcError) as error:
            list(stream)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "service shutting down" in error.value.details()
        assert server.wait(timeout=10) == 0
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        channel.close()
    finally:
        server.kill()


def test_describe_reports_the_framework_of_the_worker_environment(described):
    # Asked once per session (conftest): test_frameworks reads the same answer.
    pytorch = described("pytorch")
    assert pytorch.framework == "pytorch"
    assert pytorch.import_s > 0
    assert "cpu" in pytorch.devices
    assert pytorch.python_version.startswith(f"{sys.version_info.major}.")


def test_reflection_answers_on_v1_and_v1alpha(services):
    channel = grpc.insecure_channel(f"127.0.0.1:{services('pytorch').port}")
    for version in ("v1", "v1alpha"):
        # v1's messages are v1alpha's, field for field: one client speaks both.
        info = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        (listed,) = info(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for s in listed.list_services_response.service}
        assert {"fwbench.v1.TrainerService", "grpc.reflection.v1.ServerReflection"} <= names
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="fwbench.v1.TrainerService"
        )
        (found,) = info(iter([request]), timeout=10)
        assert found.file_descriptor_response.file_descriptor_proto
    channel.close()


def test_idle_reflection_streams_are_capped_and_never_starve_health_or_describe(services):
    # More idle streams than the 16 request threads the service used to have, all of which they
    # took: health checks and Describe then waited past their deadlines.
    address = f"127.0.0.1:{services('pytorch').port}"
    idle, channel = grpc.insecure_channel(address), grpc.insecure_channel(address)
    info = idle.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    release = threading.Event()

    def nothing_until_released():
        release.wait()
        yield from ()

    streams = [info(nothing_until_released()) for _ in range(20)]
    try:
        asked_at = time.monotonic()
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="fwbench.v1.TrainerService"), timeout=2
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert time.monotonic() - asked_at < 2
        # Describe's worker imports PyTorch (seconds); the request itself no longer waits.
        described = pb_grpc.TrainerServiceStub(channel).Describe(pb.DescribeRequest(), timeout=60)
        assert described.framework == "pytorch"
        refused = [stream for stream in streams if stream.done()]
        assert len(refused) == len(streams) - limits.MAX_REFLECTION_STREAMS
        for stream in refused:
            assert stream.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (
                f"server reflection: {limits.MAX_REFLECTION_STREAMS} streams are already open "
                "on this service, its limit"
            ) in stream.details()
    finally:
        release.set()
        for stream in streams:
            stream.cancel()
        idle.close()
        channel.close()


def test_an_inspect_over_its_budget_is_refused_before_any_worker_starts(stub):
    # Both fields in bounds: the worker used to build 410 MB of reply out of ~6 GB.
    request = pb.InspectRequest(spec=tiny_spec(model__num_classes=100_000), probe_batch_size=1024)
    with pytest.raises(grpc.RpcError) as error:
        stub("pytorch").Inspect(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1024 x 100000 = 102,400,000 probe logits" in error.value.details()
    assert "over Inspect's budget of 524,288 logits" in error.value.details()
    assert not workers()


def test_a_data_path_name_over_255_bytes_is_invalid_argument_naming_the_limit(stub, tmp_path):
    # In an existing directory inside the data roots, so that only its length is wrong: the file
    # system's ENAMETOOLONG used to escape as UNKNOWN.
    too_long = tmp_path / ("x" * 256)
    spec = tiny_spec(data__source="directory", data__data_dir=str(too_long))
    with pytest.raises(grpc.RpcError) as error:
        next(stub("pytorch").Train(pb.TrainRequest(spec=spec), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("data.data_dir: 'xxxxxxxxxxxxxxxxxxxx'… is 256 bytes")
    assert "at most 255 bytes" in error.value.details()


@pytest.fixture
def confined(tmp_path):
    """A PyTorch service that may read only under tmp_path/root, and its stub."""
    root = tmp_path / "root"
    root.mkdir()
    service = server.start("pytorch", python=venv_python("pytorch"), data_roots=[root])
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    yield root, pb_grpc.TrainerServiceStub(channel)
    channel.close()
    service.stop()


def train_directory(trainer, path, **limits) -> list[pb.TrainEvent]:
    spec = tiny_spec(data__source="directory", data__data_dir=str(path), batch_size=4)
    spec.data.ClearField("train_limit")
    spec.data.ClearField("test_limit")
    for name, value in limits.items():
        setattr(spec.data, name, value)
    return list(trainer.Train(pb.TrainRequest(spec=spec), timeout=120))


def test_datasets_outside_the_data_roots_are_permission_denied(confined, tmp_path):
    root, trainer = confined
    outside = prepared(tmp_path / "outside")
    (root / "link").symlink_to(outside)
    for path in (outside, root / ".." / "outside" / "tiny", root / "link", "/etc"):
        with pytest.raises(grpc.RpcError) as error:
            train_directory(trainer, path)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"outside the data roots this service may read ({root})" in error.value.details()


def test_a_meta_json_naming_a_file_elsewhere_is_permission_denied(confined):
    root, trainer = confined
    path = prepared(root)
    meta = json.loads((path / "meta.json").read_text())
    meta["arrays"]["train_images"]["file"] = "../../../../etc/hostname"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(grpc.RpcError) as error:
        train_directory(trainer, path)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may name only files beside it" in error.value.details()


def test_a_dataset_inside_the_roots_trains_with_its_own_class_count(confined):
    root, trainer = confined
    events = train_directory(trainer, prepared(root, classes=3))
    assert events[0].run_started.num_classes == 3
    assert events[-1].run_end.status == "ok"
    with pytest.raises(grpc.RpcError) as error:
        train_directory(trainer, root / "tiny", train_limit=13)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "13 is more than the 12 train samples" in error.value.details()


STALL_TIMEOUT_S = 2
# A client whose HTTP/2 flow-control window is 1 byte (and stays so: no BDP probing, which would
# grow it): the first message it does not read waits in the server's send at once, as every
# message waits once a client that stopped reading has filled its window (64 KiB by default).
NO_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1)]


@pytest.fixture(scope="module")
def impatient():
    """A PyTorch service that stops a stream its client reads nothing of for STALL_TIMEOUT_S."""
    service = server.start(
        "pytorch", python=venv_python("pytorch"), stall_timeout_s=STALL_TIMEOUT_S
    )
    yield service
    service.stop()


def wait_for_workers_to_exit() -> None:
    deadline = time.monotonic() + 60
    while workers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not workers(), "the worker of a stream nobody reads kept going"


def start_when_free(trainer, spec: pb.TrainSpec):
    """A Train call of spec whose RunStarted has been read, sent again while the slot is taken
    (it is freed a moment after its worker exits, on a loaded host)."""
    deadline = time.monotonic() + 5
    while True:
        call = trainer.Train(pb.TrainRequest(spec=spec))
        try:
            assert next(call).WhichOneof("event") == "run_started"
            return call
        except grpc.RpcError as busy:
            if busy.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_client_that_stops_reading_loses_its_run_within_the_stall_timeout_of_its_last_read(
    impatient,
):
    address = f"127.0.0.1:{impatient.port}"
    first = grpc.insecure_channel(address, options=NO_WINDOW)
    second = grpc.insecure_channel(address, options=NO_WINDOW)
    try:
        stalled = pb_grpc.TrainerServiceStub(first).Train(
            pb.TrainRequest(spec=long_spec(run_id="stalled"))
        )
        assert next(stalled).WhichOneof("event") == "run_started"  # then reads nothing more
        last_read = time.monotonic()
        wait_for_workers_to_exit()
        # The timeout, the next event (telemetry comes every second), the watch's half-second
        # look, the worker's exit (SIGTERM, SIGKILL after 1 s). It used to count only once 64
        # more events had queued in the server: a minute more here.
        gone_after_s = time.monotonic() - last_read
        assert gone_after_s < STALL_TIMEOUT_S + 4, f"the run went on for {gone_after_s:.1f} s"

        # The slot is free: the next run starts, and its client stops reading too.
        later = start_when_free(pb_grpc.TrainerServiceStub(second), long_spec(run_id="later"))
        wait_for_workers_to_exit()
        # Each stopped stream keeps a request thread while gRPC waits to send it anything, and a
        # client stopping run after run would take them all: the earlier stream is ended at
        # once, without waiting for its client to read why...
        with pytest.raises(grpc.RpcError) as earlier:
            list(stalled)
        assert earlier.value.code() == grpc.StatusCode.CANCELLED
        assert "the server cancelled" not in earlier.value.details()
        # ...which the latest one's client still gets, once it reads again.
        with pytest.raises(grpc.RpcError) as latest:
            list(later)
        assert latest.value.code() == grpc.StatusCode.CANCELLED
        assert (
            f"the server cancelled run 'later': its client read nothing for {STALL_TIMEOUT_S} s"
        ) in latest.value.details()
    finally:
        first.close()
        second.close()


def test_debug_probes_whose_client_stops_reading_are_stopped_saying_why(impatient):
    unread = grpc.insecure_channel(f"127.0.0.1:{impatient.port}", options=NO_WINDOW)
    try:
        job = tiny_spec(run_id="probes", batch_size=8, data__train_limit=32, sample_interval_ms=0)
        request = pb.DebugProbeRequest(spec=job, probes=["channel_order"], executions=["eager"])
        probes = pb_grpc.TrainerServiceStub(unread).DebugProbe(request)  # not read for now
        deadline = time.monotonic() + 60
        while not workers() and time.monotonic() < deadline:
            time.sleep(0.1)
        # The unbroken job's worker answers and exits; its result then waits for the client,
        # which reads nothing: past the timeout, the probes are stopped (no other worker starts).
        wait_for_workers_to_exit()
        time.sleep(STALL_TIMEOUT_S + 2)
        with pytest.raises(grpc.RpcError) as error:
            for result in probes:
                assert result.probe == "none"
        assert error.value.code() == grpc.StatusCode.CANCELLED
        assert (
            f"the server cancelled the debug probes of 'probes': its client read nothing for "
            f"{STALL_TIMEOUT_S} s"
        ) in error.value.details()
    finally:
        unread.close()


def test_a_worker_out_of_host_memory_is_resource_exhausted_naming_it(tmp_path):
    # The worker's address space is capped the way a container's memory limit caps a service:
    # ~1 GB above what importing PyTorch maps, less than the full synthetic set needs to be made.
    limited = tmp_path / "python"
    limited.write_text(f'#!/bin/sh\nulimit -v 4600000\nexec {venv_python("pytorch")} "$@"\n')
    limited.chmod(0o755)
    service = server.start("pytorch", python=str(limited))
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    spec = tiny_spec()
    spec.data.ClearField("train_limit")
    try:
        with pytest.raises(grpc.RpcError) as error:
            list(pb_grpc.TrainerServiceStub(channel).Train(pb.TrainRequest(spec=spec), timeout=300))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "out of host memory" in error.value.details()
    finally:
        channel.close()
        service.stop()


# A memory limit that a small PyTorch run fits in (import, model, batch 32: under 1 GB here) and
# a batch whose first activations alone exceed it (MobileNetV2 at 4096 images: many GB).
OOM_LIMIT_BYTES = 1536 << 20
OOM_BATCH_SIZE = 4096


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[Path]:
    """A memory cgroup of its own under this process's, limited to limit_bytes without swap, as a
    container's memory limit is; skips the test where cgroups cannot be made (not root, no memory
    controller, a v2 parent that delegates none)."""
    own = own_cgroups()
    name = f"fwbench-test-oom-{os.getpid()}"
    if "memory" in own:  # v1
        cgroup = Path("/sys/fs/cgroup/memory") / own["memory"] / name
        limits = {"memory.limit_in_bytes": limit_bytes}
    else:  # v2: the parent must hand the memory controller to its children
        cgroup = Path("/sys/fs/cgroup") / own.get("", "") / name
        limits = {"memory.max": limit_bytes, "memory.swap.max": 0}
    try:
        cgroup.mkdir()
    except OSError as e:
        pytest.skip(
            f"cannot make a memory cgroup at {cgroup} ({e.strerror}): needs root and cgroups"
        )
    try:
        try:
            for file, value in limits.items():
                (cgroup / file).write_text(str(value))
        except OSError as e:
            pytest.skip(f"cannot limit memory in {cgroup} ({e.strerror}): no memory controller")
        yield cgroup
    finally:
        # A killed worker leaves the cgroup a moment after its exit status is read.
        deadline = time.monotonic() + 10
        while True:
            try:
                cgroup.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def test_a_worker_the_oom_killer_ends_names_sigkill_and_the_service_trains_the_next(tmp_path):
    # Each worker starts in a memory cgroup of its own, as under a container's memory limit: a
    # batch too large for it gets the worker SIGKILLed by the kernel's OOM killer (no Python
    # MemoryError, nothing the worker could catch); a small run then trains. The server stays
    # outside: with the server in the same cgroup, this kernel killed the server too, 5 ms after
    # the worker, before the worker's memory was freed (docs/security.md).
    with memory_cgroup(OOM_LIMIT_BYTES) as cgroup:
        limited = tmp_path / "python"
        limited.write_text(
            f'#!/bin/sh\necho $$ > {cgroup}/cgroup.procs\nexec {venv_python("pytorch")} "$@"\n'
        )
        limited.chmod(0o755)
        service = server.start("pytorch", python=str(limited))
        channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
        try:
            trainer = pb_grpc.TrainerServiceStub(channel)
            huge = tiny_spec(run_id="huge", batch_size=OOM_BATCH_SIZE)
            huge.data.train_limit = OOM_BATCH_SIZE
            with pytest.raises(grpc.RpcError) as error:
                list(trainer.Train(pb.TrainRequest(spec=huge), timeout=300))
            # RESOURCE_EXHAUSTED where the server can read the OOM count of the worker's cgroup
            # (its own), else INTERNAL; either way the signal is named.
            assert error.value.code() in (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.INTERNAL,
            ), error.value.details()
            assert "SIGKILL" in error.value.details()
            assert int(_oom_kills(cgroup)) >= 1  # it was the OOM killer, not anything else
            events = list(trainer.Train(pb.TrainRequest(spec=tiny_spec(run_id="small"))))
            assert events[-1].WhichOneof("event") == "run_end"
            assert events[-1].run_end.status == "ok"
        finally:
            channel.close()
            service.stop()


def _oom_kills(cgroup: Path) -> str:
    for file in ("memory.oom_control", "memory.events"):
        if (cgroup / file).exists():
            counts = dict(line.split() for line in (cgroup / file).read_text().splitlines())
            return counts["oom_kill"]
    raise AssertionError(f"no OOM counter in {cgroup}")


def test_a_second_service_on_a_port_in_use_refuses_to_start_naming_the_port():
    # gRPC opens ports with SO_REUSEPORT by default: a second server would say "listening", and
    # calls would land on either at random. Framework-free: the server never starts a worker.
    first = server.start("jax")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "services.common.server", "--framework", "pytorch",
             "--port", str(first.port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"port {first.port} is in use on 127.0.0.1" in second.stderr
        assert "listening" not in second.stdout and "Traceback" not in second.stderr
    finally:
        first.stop()
