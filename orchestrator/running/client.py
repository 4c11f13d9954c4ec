"""The orchestrator's side of the contract: a thin client of one framework service."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fwbench.v1 import trainer_pb2 as pb
from fwbench.v1 import trainer_pb2_grpc as pb_grpc
from orchestrator.results.journal import RunOutcome
from services.common import security

# Describe and Inspect start a worker that imports the framework (TensorFlow: ~10 s cold).
CALL_DEADLINE_S = 300


class ServiceUnavailable(Exception):
    pass


def mismatch(address: str, expected: str, served: str) -> str:
    """What to say when the service at address trains `served`, not the framework it was given."""
    return (
        f"the service at {address} was given as {expected} but serves {served or 'no framework'}: "
        f"check --service {expected}=HOST:PORT (is the port another framework's?)"
    )


@dataclasses.dataclass(frozen=True)
class ClientSecurity:
    """How to reach services that are exposed safely (services/common/security.py): TLS with the
    CA that signed their certificates (and a client certificate for mutual TLS), and the shared
    token sent as `authorization: Bearer ...`. The default reaches plaintext services."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    token: str | None = None


# Services on loopback or a private network (the local launcher, compose): no TLS, no token.
PLAINTEXT = ClientSecurity()


class TrainerClient:
    def __init__(self, framework: str, address: str, secured: ClientSecurity = PLAINTEXT):
        self.framework = framework
        self.address = address
        # Progress is small, but a stream can be long: no message size surprises, keepalive on.
        self._channel = security.channel(
            address,
            ca_file=secured.ca_file,
            cert_file=secured.cert_file,
            key_file=secured.key_file,
            token=secured.token,
            options=(("grpc.keepalive_time_ms", 30_000),),
        )
        self._stub = pb_grpc.TrainerServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._call = None  # the Train call in progress
        self._cancelled = False

    def wait_until_serving(self, timeout_s: float, fail_fast: bool = False) -> None:
        """Blocks until the service's health answers SERVING, or raises ServiceUnavailable.
        fail_fast: a service that refuses connections throughout gives up as soon as gRPC's
        reconnect back-off says so, rather than waiting out timeout_s."""
        request = health_pb2.HealthCheckRequest(service="fwbench.v1.TrainerService")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = self._health.Check(
                    request,
                    wait_for_ready=not fail_fast,
                    timeout=max(0.1, deadline - time.monotonic()),
                ).status
                break
            except grpc.RpcError as e:
                # UNAVAILABLE while the first connection attempts fail; retried until the deadline.
                refused = fail_fast and e.code() == grpc.StatusCode.UNAVAILABLE
                if refused and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise ServiceUnavailable(
                    f"the {self.framework} service at {self.address} did not answer within "
                    f"{timeout_s:.0f} s ({e.code().name}: {e.details()}): is it running and "
                    "reachable?"
                ) from e
        if status != health_pb2.HealthCheckResponse.SERVING:
            raise ServiceUnavailable(
                f"the {self.framework} service at {self.address} is "
                f"{health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
            )

    def serving(self, timeout_s: float) -> bool:
        """One health check, not retried: whether the service answers SERVING within timeout_s
        (a refused connection is an answer: no)."""
        request = health_pb2.HealthCheckRequest(service="fwbench.v1.TrainerService")
        try:
            status = self._health.Check(request, timeout=timeout_s).status
        except grpc.RpcError:
            return False
        return status == health_pb2.HealthCheckResponse.SERVING

    def describe(self) -> pb.DescribeResponse:
        return self._stub.Describe(
            pb.DescribeRequest(), wait_for_ready=True, timeout=CALL_DEADLINE_S
        )

    def inspect(
        self, spec: pb.TrainSpec, probe_batch_size: int = 8, train_steps: int = 0
    ) -> pb.ModelReport:
        return self._stub.Inspect(
            pb.InspectRequest(
                spec=spec, probe_batch_size=probe_batch_size, train_steps=train_steps
            ),
            wait_for_ready=True,
            timeout=CALL_DEADLINE_S,
        )

    def debug_probe(
        self, spec: pb.TrainSpec, probes: list[str], executions: list[str]
    ) -> Iterator[pb.ProbeResult]:
        """The service's ProbeResults, one per probe x execution mode, as each is measured. No
        deadline: the job is small, but every probe starts a worker (TensorFlow: ~10 s)."""
        request = pb.DebugProbeRequest(spec=spec, probes=probes, executions=executions)
        yield from self._stub.DebugProbe(request, wait_for_ready=True)

    def run(
        self, spec: pb.TrainSpec, on_event: Callable[[pb.TrainEvent], None] = lambda _: None
    ) -> RunOutcome:
        """Trains spec on the service, passing every event to on_event as it arrives.
        A Ctrl-C (or cancel() from another thread) cancels the run on the service (its worker is
        stopped) and ends the call with what had arrived, `interrupted` set."""
        outcome = RunOutcome()
        # No deadline: a run's length is the experiment's, not the network's.
        stream = self._call = self._stub.Train(pb.TrainRequest(spec=spec), wait_for_ready=True)
        self._cancelled = False
        try:
            for event in stream:
                kind = event.WhichOneof("event")
                if kind == "run_started" and event.run_started.framework != self.framework:
                    # Another service now answers at this address: its numbers must never be
                    # recorded under this framework's name.
                    stream.cancel()
                    outcome.code = grpc.StatusCode.FAILED_PRECONDITION
                    served = event.run_started.framework
                    outcome.error = "FAILED_PRECONDITION: " + mismatch(
                        self.address, self.framework, served
                    )
                    break
                on_event(event)
                if kind == "run_started":
                    outcome.started = event.run_started
                elif kind == "run_end":
                    outcome.end = event.run_end
        except grpc.RpcError as e:
            outcome.code = e.code()
            outcome.error = f"{e.code().name}: {e.details()}"
        except KeyboardInterrupt:
            stream.cancel()
            self._cancelled = True
        except Exception:
            # on_event failed (results cannot be written): nobody reads the rest, so the service
            # stops the run and frees its slot now.
            stream.cancel()
            raise
        finally:
            self._call = None
        if self._cancelled and outcome.end is None:
            outcome.interrupted = True
            outcome.code = grpc.StatusCode.CANCELLED
            outcome.error = "CANCELLED: interrupted by the user (Ctrl-C)"
        if outcome.end is None and not outcome.error:
            outcome.error = "the stream ended without RunEnd"
        return outcome

    def cancel(self) -> None:
        """Cancels the run in progress (from any thread); its run() returns it as interrupted."""
        call = self._call
        if call is not None:
            self._cancelled = True
            call.cancel()

    def close(self) -> None:
        self._channel.close()
