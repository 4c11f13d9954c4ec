"""The orchestrator's side of the contract: a thin client of one framework service."""

from __future__ import annotations

import dataclasses
import socket
import ssl
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
# Asking a service whether it speaks TLS: one connection and a handshake, or a refusal.
TLS_PROBE_TIMEOUT_S = 2


class ServiceUnavailable(Exception):
    pass


def mismatch(address: str, expected: str, served: str) -> str:
    """What to say when the service at address trains `served`, not the framework it was given."""
    return (
        f"the service at {address} was given as {expected} but serves {served or 'no framework'}: "
        f"check --service {expected}=HOST:PORT (is the port another framework's?)"
    )


def tls_answer(address: str, timeout_s: float) -> str | None:
    """How the service at HOST:PORT answers a TLS client that offers no certificate: None when
    no TLS handshake completes (it is not listening, or speaks plaintext); "closed" when one
    completes and the service then closes the connection without a byte (what a service that
    requires a client certificate does: TLS 1.3 refuses it after the handshake); "served" when the
    HTTP/2 server's first bytes come. Its certificate is not checked: this asks only how it
    speaks."""
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as raw,
            context.wrap_socket(raw) as tls,
        ):
            try:
                return "served" if tls.recv(1) else "closed"
            except OSError:  # reset, or an alert after the handshake
                return "closed"
    except OSError:  # refused, reset, timed out, or not TLS (ssl.SSLError is an OSError)
        return None


def tls_mismatch(
    framework: str, address: str, details: str, ca_file: Path | None, cert_file: Path | None
) -> str | None:
    """What is wrong when a connection to address failed with gRPC's `details` because the two
    sides disagree on TLS, which no retry can cure; None for any other failure. A TLS channel's
    details name the handshake's failure; a plaintext channel to a TLS service, and a TLS one
    without the client certificate a service requires, see only a closed socket, so the service
    is asked how it answers."""
    service = f"the {framework} service at {address}"
    if ca_file is None:
        if tls_answer(address, TLS_PROBE_TIMEOUT_S) is None:
            return None
        return (
            f"{service} speaks TLS and fwbench connected in plaintext: give --tls-ca FILE "
            f"(or ${security.TLS_CA_ENV}), the CA that signed its certificate"
        )
    if "WRONG_VERSION_NUMBER" in details:  # what came back was no TLS record
        return (
            f"{service} does not speak TLS (it answered in plaintext): drop --tls-ca {ca_file} "
            f"(and ${security.TLS_CA_ENV}), or start the service with TLS"
        )
    if "CERTIFICATE_VERIFY_FAILED" in details:
        # OpenSSL's reason follows the code ("...: unable to get local issuer certificate: OK").
        reason = details.split("CERTIFICATE_VERIFY_FAILED:", 1)[1].strip().removesuffix(": OK")
        if "issuer" in reason or "self signed" in reason or "self-signed" in reason:
            return (
                f"the certificate of {service} is not signed by the CA in {ca_file} ({reason}): "
                "give --tls-ca the CA that signed the service's certificate"
            )
        return f"the certificate of {service} does not verify against {ca_file}: {reason}"
    if "Hostname Verification" in details or "not in peer certificate" in details:
        return (
            f"the certificate of {service} is signed by the CA in {ca_file} but not issued for "
            f"{address.rpartition(':')[0]}: reach the service by a name its certificate holds"
        )
    if "handshake" in details.lower():
        return f"the TLS handshake with {service} failed ({details})"
    if "Socket closed" in details and tls_answer(address, TLS_PROBE_TIMEOUT_S) == "closed":
        if cert_file is None:
            return (
                f"{service} closes TLS connections that bring no client certificate: it requires "
                "mutual TLS; give --tls-cert FILE and --tls-key FILE, a certificate signed by "
                "the CA it trusts for clients"
            )
        return (
            f"{service} closed the TLS connection after the handshake: it did not accept the "
            f"client certificate {cert_file} (is it signed by the CA the service trusts for "
            "clients, with clientAuth usage?)"
        )
    return None


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
        self._ca_file = secured.ca_file
        self._cert_file = secured.cert_file
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
        fail_fast: each check fails as soon as gRPC cannot connect, rather than waiting for a
        connection, so that a failure that no retry cures (the two sides disagree on TLS:
        tls_mismatch) is said at once; refused connections are retried until timeout_s."""
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
                unavailable = e.code() == grpc.StatusCode.UNAVAILABLE
                # A starting service refuses connections; it never fails a TLS handshake.
                tls = unavailable and tls_mismatch(
                    self.framework, self.address, e.details(), self._ca_file, self._cert_file
                )
                if tls:
                    raise ServiceUnavailable(tls) from e
                # UNAVAILABLE while the first connection attempts fail; retried until the deadline.
                refused = fail_fast and unavailable
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
