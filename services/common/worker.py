"""One fresh worker process per request: the framework is imported there, never in the server.

Why a process per run: the cold import is measured honestly, a crash or an out-of-memory kills
only the worker (the server stays healthy), and the GPU memory is really released afterwards.
Running out of memory is RESOURCE_EXHAUSTED naming which memory: the framework's GPU
out-of-memory error, Python's MemoryError (host), or, when the kernel's OOM killer SIGKILLs the
worker, the cgroup's oom_kill counter having risen meanwhile (host).

Parent side: `Worker` starts `python -m services.common.worker FRAMEWORK TASK FD ORIGIN`, writes
the serialized request to its stdin and reads framed messages from a pipe (not stdout, which
frameworks print to). Child side: `main()` loads the framework's Trainer
(services/common/frameworks.py), does the task (the kind of request it serves: describe,
inspect, train or debug) and writes the frames.

A frame is one kind byte, a 4-byte big-endian length and a payload:
  E  a serialized TrainEvent        (task train)
  R  a serialized response message  (tasks describe, inspect, debug)
  X  an error: JSON {"code": grpc status name, "message": text}
"""

from __future__ import annotations

import collections
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from services.common import frameworks

EVENT, RESPONSE, ERROR = b"E", b"R", b"X"
_HEADER = struct.Struct(">cI")
STDERR_TAIL_LINES = 30
# Where the kernel counts OOM kills of a memory cgroup: (hierarchy, file, key), cgroup v2 then v1.
OOM_COUNTERS = (("", "memory.events", "oom_kill"), ("memory", "memory.oom_control", "oom_kill"))
CGROUP_MOUNT = Path("/sys/fs/cgroup")


# A gRPC status message travels in a trailer, and a client refuses trailers over 16 KiB
# ("Stream removed", RESOURCE_EXHAUSTED: the real error lost). A framework's message can be far
# longer (Flax printed a model's whole graph definition, 140 KB): its start and its end are kept.
MESSAGE_MAX_CHARS = 4000


def bounded(message: str, limit: int = MESSAGE_MAX_CHARS) -> str:
    """message, or its start and end with how much was left out between them."""
    if len(message) <= limit:
        return message
    left_out = f" [... {len(message) - limit:,} characters left out; the service's log has all] "
    keep = (limit - len(left_out)) // 2
    return message[:keep] + left_out + message[len(message) - keep :]


class WorkerError(Exception):
    """The worker reported an error (code is a grpc.StatusCode name) or died; the message
    bounded to MESSAGE_MAX_CHARS."""

    def __init__(self, code: str, message: str):
        message = bounded(message)
        super().__init__(message)
        self.code = code
        self.message = message


class Worker:
    """A running worker process, seen from the server."""

    def __init__(self, framework: str, task: str, request: bytes, python: str = sys.executable):
        read_fd, write_fd = os.pipe()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        cmd = [python, "-m", "services.common.worker", framework, task, str(write_fd)]
        self._proc = subprocess.Popen(
            [*cmd, repr(time.time())],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(write_fd,),
            # Own process group: a cancel kills the worker and anything it started (data loaders).
            start_new_session=True,
        )
        os.close(write_fd)
        self._pipe = os.fdopen(read_fd, "rb")
        self._stopping = False
        self._oom_kills_at_start = oom_kills()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self._proc.stdin.write(request)
        self._proc.stdin.close()

    def _drain_stderr(self) -> None:
        # Forward the worker's log to ours (the service log) and keep its tail for error messages.
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace")
            sys.stderr.write(line)
            self._stderr_tail.append(line.rstrip())

    def messages(self) -> Iterator[tuple[bytes, bytes]]:
        """Yields (kind, payload) frames until the worker closes the pipe; raises WorkerError
        for an error frame or when the worker exits non-zero."""
        while header := self._pipe.read(_HEADER.size):
            if len(header) < _HEADER.size:
                break
            kind, length = _HEADER.unpack(header)
            payload = self._pipe.read(length)
            if len(payload) < length:
                break
            if kind == ERROR:
                error = json.loads(payload)
                raise WorkerError(error["code"], error["message"])
            yield kind, payload
        returncode = self._proc.wait()
        if returncode == -signal.SIGKILL and not self._stopping:
            before, now = self._oom_kills_at_start, oom_kills()
            if before is not None and now is not None and now > before:
                raise WorkerError(
                    "RESOURCE_EXHAUSTED",
                    "out of host memory: the kernel's OOM killer ended the worker "
                    "(SIGKILL; the memory cgroup's oom_kill count rose); use a smaller "
                    "batch_size, model or data limit, or a host with more memory",
                )
        if returncode != 0:
            raise WorkerError("INTERNAL", self._death_message(returncode))

    def response(self) -> bytes:
        """The single response of a describe/inspect worker."""
        for kind, payload in self.messages():
            if kind == RESPONSE:
                return payload
        raise WorkerError("INTERNAL", "the worker exited without answering")

    def _death_message(self, returncode: int) -> str:
        how = (
            f"was killed by signal {signal.Signals(-returncode).name}"
            if returncode < 0
            else f"exited with code {returncode}"
        )
        tail = "\n".join(self._stderr_tail) or "(no output)"
        return f"the worker process {how}; its last output:\n{tail}"

    def stop(self, grace_s: float = 1.0) -> None:
        """Ends the worker: SIGTERM to its process group, SIGKILL after grace_s."""
        self._stopping = True
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            except ProcessLookupError:
                pass
        self._pipe.close()


class Sink:
    """Child side: writes frames to the parent, from any thread (the sampler thread emits too)."""

    def __init__(self, fd: int, origin_s: float):
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._lock = threading.Lock()
        self.origin_s = origin_s

    def t_s(self) -> float:
        """Seconds since the parent started this worker."""
        return time.time() - self.origin_s

    def write(self, kind: bytes, payload: bytes) -> None:
        with self._lock:
            self._file.write(_HEADER.pack(kind, len(payload)) + payload)

    def event(self, event) -> None:
        event.t_s = self.t_s()
        self.write(EVENT, event.SerializeToString())


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has ended in this process's memory cgroup (the
    worker's, which it inherits); None when no counter can be read (then an OOM kill reads as a
    SIGKILL, INTERNAL). cgroup v1 counts a kill only in the victim's own cgroup, never in its
    parents, so the counter read is that of the cgroup /proc/self/cgroup names; inside a container
    that path may not exist under the mount, whose root is then the container's own cgroup."""
    own = own_cgroups()
    for hierarchy, file, key in OOM_COUNTERS:
        if hierarchy not in own:
            continue
        # v2 is mounted on /sys/fs/cgroup, or on its unified/ beside v1 (the hybrid layout).
        mounts = (
            [CGROUP_MOUNT / hierarchy] if hierarchy else [CGROUP_MOUNT, CGROUP_MOUNT / "unified"]
        )
        for mount in mounts:
            for directory in (mount / own[hierarchy], mount):
                count = _counter(directory / file, key)
                if count is not None:
                    return count
    return None


def own_cgroups() -> dict[str, str]:
    """This process's cgroup in each hierarchy, relative to its mount: {"": v2 path, "memory": v1
    memory path, ...}; {} when /proc/self/cgroup cannot be read."""
    try:
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    own = {}
    for line in memberships:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path.lstrip("/")
    return own


def _counter(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def _error(exc: BaseException) -> tuple[str, str]:
    """(grpc status name, message) of an exception raised in the worker."""
    from services.common.datasets import DataAccessError, DataError
    from services.common.spec import SpecError

    message = str(exc) or type(exc).__name__
    if isinstance(exc, SpecError):
        return "INVALID_ARGUMENT", message
    if isinstance(exc, DataAccessError):
        return "PERMISSION_DENIED", message
    if isinstance(exc, DataError):
        return "FAILED_PRECONDITION", message
    if isinstance(exc, MemoryError):
        return "RESOURCE_EXHAUSTED", f"out of host memory (MemoryError): {message}"
    # torch.OutOfMemoryError, tf.errors.ResourceExhaustedError: matched by name so that this
    # module imports no framework. Both are raised for device (GPU) allocations.
    if type(exc).__name__ in ("OutOfMemoryError", "ResourceExhaustedError"):
        return "RESOURCE_EXHAUSTED", f"out of GPU memory ({type(exc).__name__}): {message}"
    return "INTERNAL", message


def main(argv: list[str]) -> int:
    framework, task, fd, origin = argv
    sink = Sink(int(fd), float(origin))
    # The parent's SIGTERM (cancel) should end the run promptly, not after the current epoch.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    try:
        from fwbench.v1 import trainer_pb2 as pb

        request_bytes = sys.stdin.buffer.read()
        if task == "train":
            # A run over N CPU devices may need them made before the framework starts.
            gpus = pb.TrainRequest.FromString(request_bytes).spec.gpus
            os.environ.update(frameworks.get(framework).devices_environment(gpus, os.environ))
        trainer = frameworks.get(framework).load_trainer()
        import_s = sink.t_s()
        if task == "describe":
            from services.common.telemetry import visible_gpu_uuids

            response = trainer.describe()
            response.import_s = import_s
            response.gpu_uuids.extend(visible_gpu_uuids())
            sink.write(RESPONSE, response.SerializeToString())
        elif task == "inspect":
            request = pb.InspectRequest.FromString(request_bytes)
            sink.write(RESPONSE, trainer.inspect(request).SerializeToString())
        elif task == "train":
            from services.common.recorder import Recorder

            spec = pb.TrainRequest.FromString(request_bytes).spec
            trainer.train(spec, Recorder(sink, spec, framework, import_s))
        elif task == "debug":
            from services.common import injection

            spec = pb.TrainSpec.FromString(request_bytes)
            sink.write(
                RESPONSE, injection.run(trainer, framework, spec, import_s).SerializeToString()
            )
        else:
            raise ValueError(f"unknown worker task {task!r}")
    except Exception as exc:
        traceback.print_exc()
        code, message = _error(exc)
        sink.write(ERROR, json.dumps({"code": code, "message": message}).encode())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
