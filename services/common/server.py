"""The gRPC server every framework service runs: `python -m services.common.server --framework F`.

The server imports no framework. It validates specs, allows one training run at a time, and runs
every request in a fresh worker process (services/common/worker.py) that imports the framework.
Besides TrainerService it serves the standard grpc.health.v1.Health (compose healthchecks,
the local launcher) and server reflection (grpcurl).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fwbench.v1 import trainer_pb2 as pb
from fwbench.v1 import trainer_pb2_grpc as pb_grpc
from services.common import frameworks
from services.common.spec import SpecError, validate, validate_inspect, with_defaults
from services.common.worker import RESPONSE, Worker, WorkerError

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TrainerService"].full_name
DEFAULT_PROBE_BATCH_SIZE = 8
# Time a client can expect between a cancel and the worker being gone: SIGTERM, then SIGKILL.
WORKER_STOP_GRACE_S = 1.0


class TrainerServicer(pb_grpc.TrainerServiceServicer):
    def __init__(self, framework: str, python: str = sys.executable, node: str = ""):
        self._framework = framework
        self._python = python
        self._node = node or platform.node()
        self._lock = threading.Lock()
        self._active: tuple[str, Worker] | None = None  # (run_id, worker) of the run in progress

    def _worker(self, mode: str, request, context) -> Worker:
        worker = Worker(self._framework, mode, request.SerializeToString(), self._python)
        # Runs when the RPC ends for any reason, cancellation and deadline included.
        context.add_callback(lambda: worker.stop(WORKER_STOP_GRACE_S))
        return worker

    def Describe(self, request, context):
        worker = self._worker("describe", request, context)
        try:
            response = pb.DescribeResponse.FromString(worker.response())
            response.node = self._node
            return response
        except WorkerError as e:
            context.abort(getattr(grpc.StatusCode, e.code), e.message)

    def Inspect(self, request, context):
        probe_batch_size = (
            request.probe_batch_size
            if request.HasField("probe_batch_size")
            else DEFAULT_PROBE_BATCH_SIZE
        )
        try:
            validate_inspect(probe_batch_size, request.train_steps)
        except SpecError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        checked = pb.InspectRequest(
            spec=_checked_spec(request.spec, context),
            probe_batch_size=probe_batch_size,
            train_steps=request.train_steps,
        )
        worker = self._worker("inspect", checked, context)
        try:
            return pb.ModelReport.FromString(worker.response())
        except WorkerError as e:
            context.abort(getattr(grpc.StatusCode, e.code), e.message)

    def Train(self, request, context):
        spec = _checked_spec(request.spec, context)
        with self._lock:
            if self._active is not None:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"run {self._active[0]!r} is already in progress on this {self._framework} "
                    "service; one run at a time keeps measurements clean: wait for it to finish "
                    "or cancel it",
                )
            worker = self._worker("train", pb.TrainRequest(spec=spec), context)
            self._active = (spec.run_id, worker)
        # The callback, not a `finally`, frees the slot: after a cancel, gRPC stops pulling this
        # generator, so code after a `yield` may never run.
        context.add_callback(lambda: self._release(worker))
        try:
            for kind, payload in worker.messages():
                if kind != RESPONSE:
                    yield pb.TrainEvent.FromString(payload)
        except WorkerError as e:
            context.abort(getattr(grpc.StatusCode, e.code), e.message)

    def _release(self, worker: Worker) -> None:
        with self._lock:
            if self._active is not None and self._active[1] is worker:
                self._active = None

    def stop_active(self) -> None:
        with self._lock:
            if self._active is not None:
                self._active[1].stop(WORKER_STOP_GRACE_S)


def _checked_spec(spec: pb.TrainSpec, context) -> pb.TrainSpec:
    spec = with_defaults(spec)
    try:
        validate(spec)
    except SpecError as e:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    return spec


@dataclasses.dataclass
class Service:
    """A started server: what tests and main() need to talk to it and stop it."""

    server: grpc.Server
    port: int
    servicer: TrainerServicer
    health: health.HealthServicer

    def stop(self, grace_s: float = 3.0) -> None:
        # Health answers NOT_SERVING first, so load balancers and compose stop sending work.
        self.health.enter_graceful_shutdown()
        self.servicer.stop_active()
        self.server.stop(grace_s).wait()


def start(
    framework: str, address: str = "127.0.0.1:0", python: str = sys.executable, node: str = ""
) -> Service:
    frameworks.get(framework)  # a ValueError naming the known ones
    # Describe/Inspect may run beside a Train; health must answer while a run is in progress.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    servicer = TrainerServicer(framework, python, node)
    pb_grpc.add_TrainerServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(address)
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Service(server, port, servicer, health_servicer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve fwbench's TrainerService for a framework.")
    parser.add_argument("--framework", required=True, choices=frameworks.NAMES)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 inside containers")
    parser.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    parser.add_argument(
        "--parent-pid",
        type=int,
        help="stop when this process is gone (the local launcher's pid: a killed orchestrator "
        "must not leave services behind)",
    )
    parser.add_argument(
        "--node",
        default=os.environ.get("FWBENCH_NODE", ""),
        help="the machine this service's CPUs belong to, for schedulers (default: $FWBENCH_NODE, "
        "else the host name; in Kubernetes pass the node name from the downward API)",
    )
    args = parser.parse_args(argv)
    # CUDA must number devices as NVML does (by PCI bus id) for telemetry to read the right GPU;
    # workers inherit this before they initialise CUDA.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    service = start(args.framework, f"{args.host}:{args.port}", node=args.node)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid, done), daemon=True).start()
    # The local launcher reads this line to learn the port.
    print(f"fwbench {args.framework} service listening on {args.host}:{service.port}", flush=True)
    done.wait()
    service.stop()


def _watch_parent(parent_pid: int, done: threading.Event) -> None:
    # Once the parent dies the service is re-parented, so getppid() changes.
    while not done.wait(1.0):
        if os.getppid() != parent_pid:
            done.set()


if __name__ == "__main__":
    main()
