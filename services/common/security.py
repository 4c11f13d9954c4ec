"""Who may talk to a service: TLS and a shared token, server side and client side (framework-free,
so the orchestrator's client and the healthcheck use the same helpers).

A service bound to a loopback address trusts its host. One reachable from elsewhere must encrypt
(TLS, server certificate and key) and authenticate (a shared token, sent as the metadata
`authorization: Bearer TOKEN`, and/or client certificates signed by a CA: mutual TLS), or be
started with --insecure, which says in the command line that the network is private (a compose
network without published ports). grpc.health.v1 never needs a token: orchestrators and container
healthchecks probe it before they know anything else.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import os
import ssl
from pathlib import Path

import grpc

TOKEN_ENV = "FWBENCH_TOKEN"
# The CA that signed the services' certificates, for clients that are not told otherwise: the
# healthcheck inside a service container, the orchestrator (docker-compose.tls.yml sets it).
TLS_CA_ENV = "FWBENCH_TLS_CA"
HEALTH_PREFIX = "/grpc.health.v1.Health/"


class SecurityError(ValueError):
    """The security options are inconsistent or unreadable; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class ServerSecurity:
    """What a server requires. All None: plaintext without a token (loopback or --insecure)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    token: str | None = None

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    @property
    def authenticates(self) -> bool:
        return self.token is not None or self.client_ca_file is not None

    def credentials(self) -> grpc.ServerCredentials:
        pair = _key_and_certificate(self.key_file, self.cert_file)
        if self.client_ca_file is None:
            return grpc.ssl_server_credentials([pair])
        return grpc.ssl_server_credentials(
            [pair],
            root_certificates=_certificates(self.client_ca_file, "--tls-client-ca"),
            require_client_auth=True,
        )

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        return [TokenInterceptor(self.token)] if self.token is not None else []


def server_security(
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    client_ca_file: Path | None = None,
    token_file: Path | None = None,
) -> ServerSecurity:
    """A ServerSecurity from command-line options; the token comes from token_file, else from
    the FWBENCH_TOKEN environment variable (compose secrets and Kubernetes both provide either)."""
    if (cert_file is None) != (key_file is None):
        raise SecurityError("--tls-cert and --tls-key go together: give both or neither")
    if client_ca_file is not None and cert_file is None:
        raise SecurityError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    # Checked now: given files it cannot use, gRPC says only "Failed to bind".
    if cert_file is not None:
        _key_and_certificate(key_file, cert_file)
    if client_ca_file is not None:
        _certificates(client_ca_file, "--tls-client-ca")
    token = _read(token_file, "--token-file").decode().strip() if token_file else None
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 16:
        raise SecurityError(
            "the token is shorter than 16 characters: use a random one, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return ServerSecurity(cert_file, key_file, client_ca_file, token)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_exposure(host: str, security: ServerSecurity, insecure: bool) -> None:
    """Raises SecurityError when a non-loopback bind lacks TLS and authentication and the
    operator did not say --insecure."""
    if is_loopback(host) or insecure or (security.tls and security.authenticates):
        return
    missing = [
        what
        for what, present in (
            ("TLS (--tls-cert, --tls-key)", security.tls),
            (
                f"a token (--token-file or {TOKEN_ENV}) or client certificates (--tls-client-ca)",
                security.authenticates,
            ),
        )
        if not present
    ]
    raise SecurityError(
        f"refusing to listen on {host}, which other machines can reach, without "
        f"{' and '.join(missing)}: anyone there could train on this machine and read its "
        "datasets. Add them, bind 127.0.0.1, or pass --insecure if the network is private "
        "(e.g. a compose network without published ports)"
    )


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call but health's without `authorization: Bearer TOKEN` (UNAUTHENTICATED)."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(HEALTH_PREFIX):
            return continuation(handler_call_details)
        sent = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(sent.encode(), self._expected):
            return continuation(handler_call_details)
        reason = "a wrong token" if sent else "no `authorization: Bearer TOKEN` metadata"
        return _refusal(method, reason, continuation(handler_call_details))


def _refusal(method: str, reason: str, handler):
    def abort(request_or_iterator, context):
        context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"{method}: this service requires its token and the call had {reason}",
        )

    # The refusal must have the handler's shape (unary or streaming) for gRPC to call it.
    if handler is None or not (handler.request_streaming or handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(abort)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.stream_unary_rpc_method_handler(abort)


class _TokenMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        return details._replace(metadata=[*(details.metadata or ()), self._header])

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)


def channel(
    address: str,
    *,
    ca_file: Path | None = None,
    token: str | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    server_name: str | None = None,
    options: tuple = (),
) -> grpc.Channel:
    """A client channel to a service: TLS when ca_file is given (the CA that signed the server's
    certificate; cert_file/key_file add a client certificate for mutual TLS; server_name when the
    certificate names another host than address, e.g. a healthcheck on 127.0.0.1), the token on
    every call when given (over plaintext only where the server allows it: loopback or
    --insecure)."""
    if server_name:
        options = (*options, ("grpc.ssl_target_name_override", server_name))
    if ca_file is None:
        if cert_file is not None:
            raise SecurityError("a client certificate needs TLS: give the server's CA too")
        raw = grpc.insecure_channel(address, options=options)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(ca_file, "CA file"),
            private_key=_read(key_file, "client key") if key_file else None,
            certificate_chain=_read(cert_file, "client certificate") if cert_file else None,
        )
        raw = grpc.secure_channel(address, credentials, options=options)
    return grpc.intercept_channel(raw, _TokenMetadata(token)) if token else raw


def _certificates(path: Path, what: str) -> bytes:
    """The file's bytes; SecurityError unless it holds PEM certificates, all well-formed."""
    pem = _read(path, what)
    try:
        ssl.create_default_context(cadata=pem.decode("ascii", errors="replace"))
    except ssl.SSLError as e:
        raise SecurityError(
            f"{what} {path}: not a PEM certificate (no well-formed -----BEGIN CERTIFICATE----- "
            "block in it); give the certificate's file"
        ) from e
    return pem


def _key_and_certificate(key_file: Path, cert_file: Path) -> tuple[bytes, bytes]:
    """(key, certificate chain) as gRPC takes them; SecurityError naming the file at fault
    unless the certificate is PEM and the key an unencrypted PEM private key of it."""
    certificate = _certificates(cert_file, "--tls-cert")
    key = _read(key_file, "--tls-key")
    try:
        # A passphrase is refused, not asked for at the terminal: gRPC cannot use it anyway.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            cert_file, key_file, password=lambda: b""
        )
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise SecurityError(
                f"--tls-key {key_file}: not the private key of --tls-cert {cert_file}; give "
                "the key that certificate was made for"
            ) from e
        raise SecurityError(
            f"--tls-key {key_file}: not a PEM private key, or one encrypted with a passphrase "
            "(which gRPC cannot read); give the unencrypted key that holds a -----BEGIN ... "
            "PRIVATE KEY----- block"
        ) from e
    return key, certificate


def _read(path: Path | None, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise SecurityError(f"{what} {path}: cannot be read ({e.strerror})") from e
