"""What one client can hold of a service: its request threads, its streams, its worker slot.

A synchronous gRPC server runs every call on a thread of its pool for as long as the call is open,
idle or not. With a pool of 16 threads and nothing else, 16 idle server-reflection streams from
one client took every thread: health checks and Describe then waited behind them until their
deadlines, and an orchestrator or Kubernetes read the service as dead. The budget that prevents it
(services/common/server.py sizes the pools from these numbers):

- every kind of stream a client may hold open has a cap on how many are open at once
  (StreamLimit); one more is refused at once, RESOURCE_EXHAUSTED naming the cap;
- Train and DebugProbe streams hold the worker slot, so one at a time, and a stream whose client
  stops reading is stopped (StallWatch), its slot freed; of the stopped ones only the latest
  keeps its thread, to tell its client why if it reads again;
- the request pool has threads beyond all of that for calls that end at once (refusals,
  validation errors);
- health Check has threads of its own, so a probe is answered whatever holds the others;
- what a call holds (the slot, a place under a cap) is freed when it ends, also when it ended
  before it could register that (on_end): a Describe whose deadline passed while its worker
  started used to keep the slot for good.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator

import grpc

# Server-reflection streams (grpcurl and Postman hold one per session) open at once. Each holds a
# request thread while it is open, idle or not.
MAX_REFLECTION_STREAMS = 4
# Health Watch streams open at once. gRPC's health servicer answers them from callbacks, so they
# hold no thread; capped all the same, so that what they do hold (a callback each) is bounded.
MAX_HEALTH_WATCHES = 16
# Request threads the worker slot's calls can hold: the call holding the slot, and the latest
# stalled Train or DebugProbe, whose thread waits for its client to read (an earlier one is
# cancelled when a later one stalls).
SLOT_THREADS = 2
# Request threads for calls that end at once: refusals (slot taken, a cap reached, no token) and
# validation errors.
SHORT_CALL_THREADS = 8
# More than every cap above together can hold, so that the short calls always find a thread.
REQUEST_THREADS = MAX_REFLECTION_STREAMS + SLOT_THREADS + SHORT_CALL_THREADS
# Health Check's own threads: it answers from memory in microseconds.
HEALTH_THREADS = 2


def on_end(context: grpc.ServicerContext, callback: Callable[[], None]) -> bool:
    """Runs callback when the call ends for any reason, cancellation and deadline included, or
    at once when it already has: gRPC then drops the callback, and what it would free (the
    slot, a count) would stay taken for good. Returns whether the call was still open."""
    if context.add_callback(callback):
        return True
    callback()
    return False


class StreamLimit:
    """At most `most` streams of one kind open at once; one more is refused at once with
    RESOURCE_EXHAUSTED naming the limit (and `advice`)."""

    def __init__(self, kind: str, most: int, advice: str):
        self._kind = kind
        self._most = most
        self._advice = advice
        self._open = 0
        self._lock = threading.Lock()

    def wrap(self, behavior: Callable) -> Callable:
        """behavior (a gRPC method handler's function), counted against this limit. gRPC's
        per-function options (experimental_non_blocking, experimental_thread_pool) are kept."""

        @functools.wraps(behavior)
        def limited(request, context, *args, **kwargs):
            self._enter(context)
            return behavior(request, context, *args, **kwargs)

        return limited

    def _enter(self, context: grpc.ServicerContext) -> None:
        with self._lock:
            full = self._open >= self._most
            if not full:
                self._open += 1
        if full:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._kind}: {self._most} streams are already open on this service, its "
                f"limit; {self._advice}",
            )
        on_end(context, self._leave)

    def _leave(self) -> None:
        with self._lock:
            self._open -= 1


class StallWatch:
    """Watches a server stream for a client that stopped reading, and calls on_stall once when
    it has.

    gRPC takes the next message from the stream's generator only once it has handed the previous
    one to the transport, which it can do only while the client's HTTP/2 flow-control window has
    room: a window is made room in by the client reading. So a message still in gRPC's hands
    timeout_s after the generator yielded it means the client has read nothing for timeout_s (plus
    the time its window took to fill, which only the client's transport knows: 64 KiB of events
    by default). Counted from that yield, not from when the server's own queue of events fills
    behind it, which would add the time that queue takes to fill."""

    def __init__(self, timeout_s: float, on_stall: Callable[[], None]):
        self._timeout_s = timeout_s
        self._on_stall = on_stall
        self._handed_at: float | None = (
            None  # monotonic time of the yield gRPC has not returned from
        )
        self._closed = threading.Event()
        self.stalled = False
        threading.Thread(target=self._watch, daemon=True).start()

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """Around the `yield` of one message."""
        self._handed_at = time.monotonic()
        try:
            yield
        finally:
            self._handed_at = None

    def close(self) -> None:
        """The call ended: stop watching."""
        self._closed.set()

    def _watch(self) -> None:
        while not self._closed.wait(min(0.5, self._timeout_s / 4)):
            handed_at = self._handed_at
            if handed_at is not None and time.monotonic() - handed_at >= self._timeout_s:
                self.stalled = True
                self._on_stall()
                return
