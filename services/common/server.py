"""The gRPC server every framework service runs: `python -m services.common.server --framework F`.

The server imports no framework. It validates specs, keeps one worker slot (one request at a time:
nothing runs beside a measured Train), and runs every request in a fresh worker process
(services/common/worker.py) that imports the framework. Besides TrainerService it serves the
standard grpc.health.v1.Health (compose healthchecks, the local launcher) and server reflection,
v1 and v1alpha (grpcurl, Postman). Datasets are read only under the data roots; who may connect is
decided in services/common/security.py; what one client can hold (threads, streams, the slot) in
services/common/limits.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import os
import platform
import queue
import signal
import socket
import sys
import threading
import types
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from fwbench.v1 import trainer_pb2 as pb
from fwbench.v1 import trainer_pb2_grpc as pb_grpc
from services.common import datasets, frameworks, injection, limits, security, weights
from services.common.spec import (
    SpecError,
    inspect_with_defaults,
    validate,
    validate_inspect,
    with_defaults,
)
from services.common.worker import RESPONSE, Worker, WorkerError

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TrainerService"].full_name
# grpcio-reflection ships only v1alpha; v1 is the same protocol under another name, which grpcurl
# and newer clients try first.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
# Time a client can expect between a cancel and the worker being gone: SIGTERM, then SIGKILL.
WORKER_STOP_GRACE_S = 1.0
# A TrainRequest is a few hundred bytes; nothing a client sends needs more.
MAX_RECEIVE_BYTES = 1 << 20
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "data"
DEFAULT_STALL_TIMEOUT_S = 60.0
# Events the server holds while gRPC waits for a slow client's flow-control window (a few seconds
# of a run's events: progress 4/s, telemetry 1/s); beyond them the worker waits on its pipe, so
# the server's memory stays bounded whatever the client does.
EVENT_QUEUE_EVENTS = 64
SHUTTING_DOWN = "service shutting down: the request was stopped with it; send it again later"


class TrainerServicer(pb_grpc.TrainerServiceServicer):
    def __init__(
        self,
        framework: str,
        python: str = sys.executable,
        data_roots: Sequence[Path] = (DEFAULT_DATA_ROOT,),
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
        node: str = "",
    ):
        self._framework = framework
        self._node = node or platform.node()
        self._python = python
        self._data_roots = tuple(data_roots)
        self._stall_timeout_s = stall_timeout_s
        self._lock = threading.Lock()
        self._active: tuple[str, Worker] | None = None  # (what, worker) holding the slot
        # The latest stream stopped for not reading: its thread waits in gRPC's send for its
        # client to read the reason (limits.SLOT_THREADS counts it).
        self._stalled: grpc.ServicerContext | None = None
        self._shutting_down = False

    def _take_slot(self, what: str, task: str, request, context) -> Worker:
        """Starts the worker of a request in the one slot, or aborts: RESOURCE_EXHAUSTED while
        another request holds it, UNAVAILABLE while the service shuts down."""
        return self._hold_slot(
            what,
            context,
            lambda: Worker(self._framework, task, request.SerializeToString(), self._python),
        )

    def _hold_slot(self, what: str, context, start):
        """The slot held by what `start()` returns (a Worker, or Workers), as _take_slot."""
        with self._lock:
            if self._shutting_down:
                context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            if self._active is not None:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self._active[0]} is in progress on this {self._framework} service; it runs "
                    "one request at a time so that nothing skews a measured run: wait for it to "
                    "finish or cancel it",
                )
            worker = start()
            self._active = (what, worker)
        # A callback, not a `finally`, frees the slot: after a cancel gRPC stops pulling a
        # streaming generator, so code after a `yield` may never run.
        if not limits.on_end(context, lambda: self._release(worker)):
            # The call ended (cancelled, past its deadline) while its worker started.
            context.abort(grpc.StatusCode.CANCELLED, "the call ended before its worker started")
        return worker

    def _abort_for(self, error: WorkerError, context) -> None:
        if self._shutting_down:
            context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        context.abort(getattr(grpc.StatusCode, error.code), error.message)

    def Describe(self, request, context):
        worker = self._take_slot("a Describe request", "describe", request, context)
        try:
            response = pb.DescribeResponse.FromString(worker.response())
        except WorkerError as e:
            self._abort_for(e, context)
        response.node = self._node
        return response

    def Inspect(self, request, context):
        checked = inspect_with_defaults(request)
        _refuse_invalid(context, validate_inspect, checked)
        _refuse_invalid(context, weights.check_paths, checked.spec, self._data_roots)
        worker = self._take_slot("an Inspect request", "inspect", checked, context)
        try:
            return pb.ModelReport.FromString(worker.response())
        except WorkerError as e:
            self._abort_for(e, context)

    def Train(self, request, context):
        spec = with_defaults(request.spec)
        _refuse_invalid(context, validate, spec)
        _refuse_invalid(context, datasets.check, spec, self._data_roots)
        _refuse_invalid(context, weights.check_paths, spec, self._data_roots)
        request = pb.TrainRequest(spec=spec)
        what = f"run {spec.run_id!r}"
        worker = self._take_slot(what, "train", request, context)
        # A thread pulls the worker's events into a bounded queue and this generator hands them
        # to gRPC: the worker's pipe is drained while gRPC waits for a slow client's window, up
        # to the queue's size.
        events: queue.Queue = queue.Queue(maxsize=EVENT_QUEUE_EVENTS)
        ended = threading.Event()
        limits.on_end(context, ended.set)
        threading.Thread(target=_pump, args=(worker, events, ended), daemon=True).start()

        def received():
            while True:
                item = events.get()
                if item is None:
                    return
                if isinstance(item, WorkerError):
                    self._abort_for(item, context)
                yield item

        yield from self._stream(context, worker, what, received())

    def DebugProbe(self, request, context):
        spec = with_defaults(request.spec)
        _refuse_invalid(context, validate, spec)
        _refuse_invalid(context, datasets.check, spec, self._data_roots)
        _refuse_invalid(context, weights.check_paths, spec, self._data_roots)
        try:
            if spec.mode == "tuned":
                # The probes break the job as users write it; the tuned steps (a CUDA graph, XLA
                # with steps_per_execution, JAX's functional step) bypass the injection points.
                raise SpecError(
                    "mode: debug probes run the default mode only; leave mode unset or 'default'"
                )
            probes, executions = injection.check_request(request.probes, request.executions)
        except SpecError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        what = f"the debug probes of {spec.run_id!r}"
        workers = self._hold_slot(what, context, lambda: Workers(self._framework, self._python))

        def measured():
            # The unbroken job first in each mode: what every probe's outcome and step time is
            # read against.
            for execution in executions:
                for probe in (injection.NONE, *probes):
                    probed = injection.probed_spec(spec, probe, execution)
                    try:
                        yield pb.ProbeResult.FromString(workers.run("debug", probed).response())
                    except WorkerError as e:
                        if e.code != "INTERNAL" or workers.stopped:
                            self._abort_for(e, context)
                        # The worker died (a segfault, an abort): that is the framework's answer.
                        yield pb.ProbeResult(
                            framework=self._framework,
                            probe=probe,
                            execution=execution,
                            outcome="crash",
                            message=e.message[: injection.MESSAGE_CHARS],
                        )

        yield from self._stream(context, workers, what, measured())

    def _stream(self, context, holder, what: str, messages):
        """Hands messages to gRPC one by one; when the client reads none for the stall timeout,
        stops `holder` (what holds the slot: a Worker, or Workers) and frees the slot, and a
        client that reads again then gets CANCELLED saying why."""
        watch = limits.StallWatch(self._stall_timeout_s, lambda: self._stall(holder, context, what))
        limits.on_end(context, watch.close)
        limits.on_end(context, lambda: self._forget_stalled(context))
        for message in messages:
            with watch.sending():
                yield message
            if watch.stalled:
                context.abort(
                    grpc.StatusCode.CANCELLED,
                    f"the server cancelled {what}: its client read nothing for "
                    f"{self._stall_timeout_s:g} s (the service's --stall-timeout-s), and a "
                    "stream nobody reads would hold the service's only slot",
                )

    def _stall(self, holder, context, what: str) -> None:
        print(
            f"fwbench {self._framework} service: stopping {what}: its client read nothing for "
            f"{self._stall_timeout_s:g} s",
            file=sys.stderr,
            flush=True,
        )
        with self._lock:
            earlier, self._stalled = self._stalled, context
        # Each stalled stream keeps a request thread in gRPC's send until its client reads or
        # leaves; only the latest keeps it, so that stalling run after run cannot take them all.
        if earlier is not None:
            earlier.cancel()
        self._release(holder)

    def _forget_stalled(self, context) -> None:
        with self._lock:
            if self._stalled is context:
                self._stalled = None

    def _release(self, worker: Worker) -> None:
        worker.stop(WORKER_STOP_GRACE_S)
        with self._lock:
            if self._active is not None and self._active[1] is worker:
                self._active = None

    def shut_down(self) -> None:
        """Refuses new requests and stops the worker in progress; its RPC ends UNAVAILABLE."""
        with self._lock:
            self._shutting_down = True
            active = self._active
        if active is not None:
            active[1].stop(WORKER_STOP_GRACE_S)


class Workers:
    """Workers started one after another under one slot (DebugProbe: one fresh process per probe,
    so that no probe's state, or crash, reaches the next). Stopping it stops the worker running
    and starts no other."""

    def __init__(self, framework: str, python: str):
        self._framework = framework
        self._python = python
        self._lock = threading.Lock()
        self._current: Worker | None = None
        self.stopped = False

    def run(self, task: str, request) -> Worker:
        with self._lock:
            if self.stopped:
                raise WorkerError("CANCELLED", "the request was stopped")
            self._current = Worker(self._framework, task, request.SerializeToString(), self._python)
            return self._current

    def stop(self, grace_s: float) -> None:
        with self._lock:
            self.stopped = True
            current = self._current
        if current is not None:
            current.stop(grace_s)


def _pump(worker: Worker, events: queue.Queue, ended: threading.Event) -> None:
    """Moves the worker's events (then None, or its WorkerError) into `events`, waiting while
    the queue is full, until the call has ended."""

    def put(item) -> bool:
        while not ended.is_set():
            try:
                events.put(item, timeout=0.5)
                return True
            except queue.Full:
                pass
        return False

    try:
        for kind, payload in worker.messages():
            if kind != RESPONSE and not put(pb.TrainEvent.FromString(payload)):
                return
        put(None)
    except WorkerError as e:
        put(e)
    except (ValueError, OSError):
        pass  # the call ended and closed the worker's pipe: nobody waits for events


def _refuse_invalid(context, check, *args) -> None:
    try:
        check(*args)
    except SpecError as e:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    except datasets.DataAccessError as e:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
    except datasets.DataError as e:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))


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
        self.servicer.shut_down()
        self.server.stop(grace_s).wait()


def start(
    framework: str,
    address: str = "127.0.0.1:0",
    python: str = sys.executable,
    *,
    data_roots: Sequence[Path] = (DEFAULT_DATA_ROOT,),
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    server_security: security.ServerSecurity | None = None,
    node: str = "",
) -> Service:
    server_security = server_security or security.ServerSecurity()
    frameworks.get(framework)  # a ValueError naming the known ones
    # Sized by services/common/limits.py: more threads than the capped streams and the slot's
    # calls can hold together, so that calls that end at once always find one.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.REQUEST_THREADS),
        interceptors=server_security.interceptors(),
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            # Exclusive: with SO_REUSEPORT (gRPC's default on Linux) a second service starts on a
            # port in use, and calls land on either at random.
            ("grpc.so_reuseport", 0),
        ],
    )
    servicer = TrainerServicer(framework, python, data_roots, stall_timeout_s, node)
    pb_grpc.add_TrainerServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    _serve_health(server, health_servicer)
    _enable_reflection(server)
    try:
        if server_security.tls:
            port = server.add_secure_port(address, server_security.credentials())
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as e:  # gRPC says only "Failed to bind"
        raise BindError(address) from e
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Service(server, port, servicer, health_servicer)


class BindError(Exception):
    """The service cannot listen on its address."""

    def __init__(self, address: str):
        # TLS files are checked when they are loaded (security.py), so they are not the cause.
        host, _, port = address.rpartition(":")
        if port != "0" and _in_use(host, int(port)):
            why = f"port {port} is in use on {host}: stop what listens there or choose another port"
        else:
            why = f"{host} may not be an address of this machine"
        super().__init__(f"cannot listen on {address}: {why}")


def _in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def _serve_health(server: grpc.Server, health_servicer: health.HealthServicer) -> None:
    """gRPC's health service on threads of its own, so that probes are answered whatever holds
    the request threads, its Watch streams capped."""
    pool = futures.ThreadPoolExecutor(
        max_workers=limits.HEALTH_THREADS, thread_name_prefix="health"
    )
    watches = limits.StreamLimit(
        "health Watch", limits.MAX_HEALTH_WATCHES, "close one, or call Check instead"
    )
    served = types.SimpleNamespace(
        Check=_on(pool, health_servicer.Check),
        List=_on(pool, health_servicer.List),
        Watch=_on(pool, watches.wrap(health_servicer.Watch)),
    )
    health_pb2_grpc.add_HealthServicer_to_server(served, server)


def _on(pool: futures.ThreadPoolExecutor, behavior):
    """behavior, run by gRPC on pool's threads rather than the server's."""

    @functools.wraps(behavior)
    def run(*args, **kwargs):
        return behavior(*args, **kwargs)

    run.experimental_thread_pool = pool
    return run


def _enable_reflection(server: grpc.Server) -> None:
    names = (
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
        REFLECTION_V1,
    )
    servicer = reflection.ReflectionServicer(names)
    # One cap for both versions: each open stream holds a request thread, idle or not.
    streams = limits.StreamLimit(
        "server reflection",
        limits.MAX_REFLECTION_STREAMS,
        "each holds one of the threads that also answer runs, so idle ones may not hold "
        "more: close one (grpcurl closes its own when it exits) and try again",
    )
    for name in (reflection.SERVICE_NAME, REFLECTION_V1):
        handler = grpc.stream_stream_rpc_method_handler(
            streams.wrap(servicer.ServerReflectionInfo),
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )


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
        "--data-root",
        type=Path,
        action="append",
        help="a directory whose datasets clients may name (repeatable); nothing outside is read "
        f"(default: {DEFAULT_DATA_ROOT})",
    )
    parser.add_argument(
        "--stall-timeout-s",
        type=float,
        default=DEFAULT_STALL_TIMEOUT_S,
        help="stop a Train or DebugProbe stream whose client reads nothing for this long "
        "(counted from the first message its flow-control window has no room for), freeing the "
        "slot",
    )
    parser.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM): TLS on")
    parser.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    parser.add_argument(
        "--tls-client-ca", type=Path, help="CA (PEM) whose client certificates are required"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the shared token clients must send (default: ${security.TOKEN_ENV})",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without TLS and authentication (private networks only)",
    )
    parser.add_argument(
        "--node",
        default=os.environ.get("FWBENCH_NODE", ""),
        help="the machine this service's CPUs belong to, for schedulers (default: $FWBENCH_NODE, "
        "else the host name; in Kubernetes pass the node name from the downward API)",
    )
    args = parser.parse_args(argv)
    if not args.stall_timeout_s > 0:
        parser.error(f"--stall-timeout-s: must be > 0 seconds, got {args.stall_timeout_s}")
    try:
        server_security = security.server_security(
            cert_file=args.tls_cert,
            key_file=args.tls_key,
            client_ca_file=args.tls_client_ca,
            token_file=args.token_file,
        )
        security.check_exposure(args.host, server_security, args.insecure)
    except security.SecurityError as e:
        parser.error(str(e))
    # CUDA must number devices as NVML does (by PCI bus id) for telemetry to read the right GPU;
    # workers inherit this before they initialise CUDA.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    try:
        service = start(
            args.framework,
            f"{args.host}:{args.port}",
            data_roots=args.data_root or (DEFAULT_DATA_ROOT,),
            stall_timeout_s=args.stall_timeout_s,
            server_security=server_security,
            node=args.node,
        )
    except BindError as e:
        parser.exit(2, f"fwbench {args.framework} service: {e}\n")
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
