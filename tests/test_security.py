"""Who may talk to a service (services/common/security.py): TLS, the shared token, health without
one, and no exposed plaintext bind without --insecure — real servers, real certificates made
here with the openssl CLI, real clients."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fwbench.v1 import trainer_pb2 as pb
from fwbench.v1 import trainer_pb2_grpc as pb_grpc
from orchestrator.running import launchers
from services.common import healthcheck, security, server
from tests.conftest import ROOT, fwbench, tiny_spec, venv_python
from tests.test_cli import refused

TOKEN = "s3cret-token-of-32-characters-xx"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


# Every test here starts a real service in a framework environment.
pytestmark = pytest.mark.framework


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for localhost signed by it, a client certificate, and another
    CA (other.pem), which signed neither."""
    d = tmp_path_factory.mktemp("pki")
    for name, subject in (("ca", "/CN=test CA"), ("other", "/CN=another CA")):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subject,
                "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"))  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))  # fmt: skip
        (d / f"{name}.ext").write_text(extension + "\n")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1",
                "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))  # fmt: skip
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


@pytest.fixture(scope="module")
def secured(pki):
    """A PyTorch service with TLS and a token."""
    service = server.start(
        "pytorch",
        "localhost:0",
        python=venv_python("pytorch"),
        server_security=security.ServerSecurity(
            cert_file=pki["server_pem"], key_file=pki["server_key"], token=TOKEN
        ),
    )
    yield service
    service.stop()


def describe(channel: grpc.Channel) -> pb.DescribeResponse:
    return pb_grpc.TrainerServiceStub(channel).Describe(pb.DescribeRequest(), timeout=60)


def test_tls_and_the_right_token_are_served(secured, pki):
    with security.channel(
        f"localhost:{secured.port}", ca_file=pki["ca_pem"], token=TOKEN
    ) as channel:
        assert describe(channel).framework == "pytorch"


@pytest.mark.parametrize("token", [None, "a-wrong-token-of-enough-length"])
def test_a_missing_or_wrong_token_is_unauthenticated(secured, pki, token):
    with security.channel(f"localhost:{secured.port}", ca_file=pki["ca_pem"], token=token) as c:
        for call in (
            lambda: describe(c),
            lambda: next(pb_grpc.TrainerServiceStub(c).Train(pb.TrainRequest(spec=tiny_spec()))),
        ):
            with pytest.raises(grpc.RpcError) as error:
                call()
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "requires its token" in error.value.details()


def test_a_plaintext_client_is_refused(secured):
    with (
        security.channel(f"localhost:{secured.port}", token=TOKEN) as channel,
        pytest.raises(grpc.RpcError) as error,
    ):
        describe(channel)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_answers_without_a_token(secured, pki):
    with security.channel(f"localhost:{secured.port}", ca_file=pki["ca_pem"]) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=healthcheck.SERVICE), timeout=10
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    # The container healthcheck checks 127.0.0.1 against a certificate for localhost.
    serving, said = healthcheck.check(
        f"127.0.0.1:{secured.port}", pki["ca_pem"], server_name="localhost"
    )
    assert serving, said


def test_mutual_tls_requires_a_client_certificate_and_fwbench_says_so_at_once(pki, tmp_path):
    service = server.start(
        "pytorch",
        "localhost:0",
        python=venv_python("pytorch"),
        server_security=security.ServerSecurity(
            cert_file=pki["server_pem"], key_file=pki["server_key"], client_ca_file=pki["ca_pem"]
        ),
    )
    address = f"localhost:{service.port}"
    try:
        with security.channel(
            address, ca_file=pki["ca_pem"], cert_file=pki["client_pem"], key_file=pki["client_key"]
        ) as channel:
            assert describe(channel).framework == "pytorch"
        with (
            security.channel(address, ca_file=pki["ca_pem"]) as channel,
            pytest.raises(grpc.RpcError) as error,
        ):
            describe(channel)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        # gRPC sees only a closed socket; fwbench asks the service and names what is missing,
        # rather than waiting out a starting service's 15 s.
        missing, took_s = remote_run(address, tmp_path / "out", "--tls-ca", pki["ca_pem"])
        assert took_s < launchers.REMOTE_CONNECT_TIMEOUT_S
        assert (
            f"the pytorch service at {address} closes TLS connections that bring no client "
            "certificate: it requires mutual TLS; give --tls-cert FILE and --tls-key FILE"
        ) in missing
        # A certificate signed by a CA the service does not trust for clients.
        stranger = ["--tls-cert", pki["other_pem"], "--tls-key", pki["other_key"]]
        refused_cert, took_s = remote_run(
            address, tmp_path / "out", "--tls-ca", pki["ca_pem"], *stranger
        )
        assert took_s < launchers.REMOTE_CONNECT_TIMEOUT_S
        assert f"it did not accept the client certificate {pki['other_pem']}" in refused_cert
        assert not (tmp_path / "out").exists()
    finally:
        service.stop()


def serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real service entry point, run until it exits (within seconds when it refuses)."""
    command = [venv_python("pytorch"), "-m", "services.common.server", "--framework", "pytorch"]
    return subprocess.run(
        [*command, "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_an_exposed_bind_is_refused_without_tls_and_a_token_or_insecure(pki):
    plain = serve("--host", "0.0.0.0")
    assert plain.returncode == 2
    assert "refusing to listen on 0.0.0.0" in plain.stderr
    assert "TLS (--tls-cert, --tls-key) and a token" in plain.stderr
    assert "--insecure" in plain.stderr
    tls_only = serve("--host", "0.0.0.0", "--tls-cert", str(pki["server_pem"]),
                     "--tls-key", str(pki["server_key"]))  # fmt: skip
    assert tls_only.returncode == 2
    assert "without a token" in tls_only.stderr


def test_exposed_binds_start_with_insecure_or_with_tls_and_a_token(pki, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    for args in (
        ("--insecure",),
        ("--tls-cert", str(pki["server_pem"]), "--tls-key", str(pki["server_key"]),
         "--token-file", str(token_file)),
    ):  # fmt: skip
        process = subprocess.Popen(
            [venv_python("pytorch"), "-m", "services.common.server", "--framework", "pytorch",
             "--host", "0.0.0.0", "--port", "0", *args],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert "listening on 0.0.0.0:" in process.stdout.readline()
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_tls_files_that_are_not_a_pem_key_and_its_certificate_are_refused_naming_the_file(
    pki, tmp_path
):
    # gRPC itself says only "Failed to bind" for any of these.
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a key\n")
    for cert, key, named in (
        (pki["server_pem"], not_pem, f"--tls-key {not_pem}: not a PEM private key"),
        (not_pem, pki["server_key"], f"--tls-cert {not_pem}: not a PEM certificate"),
        (pki["server_key"], pki["server_key"], f"--tls-cert {pki['server_key']}: not a PEM"),
        (
            pki["server_pem"],
            pki["client_key"],
            f"--tls-key {pki['client_key']}: not the private key of --tls-cert",
        ),
    ):
        refused = serve("--tls-cert", str(cert), "--tls-key", str(key))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert named in refused.stderr
        assert "listen" not in refused.stderr + refused.stdout
        assert "Traceback" not in refused.stderr


def test_a_short_token_is_refused():
    short = serve("--insecure", env={"FWBENCH_TOKEN": "short", "PATH": "/usr/bin:/bin"})
    assert short.returncode == 2
    assert "shorter than 16 characters" in short.stderr


def test_fwbench_reaches_a_secured_service_with_the_ca_and_the_token(secured, pki, tmp_path):
    # The orchestrator as users run it, against a service exposed with TLS and a token.
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    address = f"pytorch=localhost:{secured.port}"
    remote = ["run", "--frameworks", "pytorch", "--models", "mobilenet", "--launcher", "remote"]
    remote += ["--service", address, "--tls-ca", pki["ca_pem"], "--device", "cpu"]
    tiny = ["--train-limit", "64", "--test-limit", "32", "--epochs", "1"]
    done = fwbench(*remote, "--token-file", token_file, *tiny, "--out", tmp_path / "ok")
    assert done.returncode == 0, done.stdout + done.stderr

    refused = fwbench(*remote, *tiny, "--out", tmp_path / "no-token")
    output = " ".join(refused.stdout.split())
    assert refused.returncode == 2, output
    assert "refused Describe (UNAUTHENTICATED" in output and "--token-file" in output
    assert not (tmp_path / "no-token").exists()


def remote_run(address: str, out: Path, *args) -> tuple[str, float]:
    """What `fwbench run` against the pytorch service at address says when it refuses, and after
    how many seconds."""
    start = time.monotonic()
    output = refused(
        "run", "--frameworks", "pytorch", "--launcher", "remote", "--service",
        f"pytorch={address}", "--out", out, *args, timeout_s=120,
    )  # fmt: skip
    return output, time.monotonic() - start


def test_fwbench_says_at_once_that_a_service_speaks_tls_or_that_its_ca_did_not_sign_it(
    secured, pki, tmp_path
):
    # Both used to wait out the 15 s a starting service gets, then ask "is it running?".
    address = f"localhost:{secured.port}"
    plaintext, took_s = remote_run(address, tmp_path / "out")
    assert took_s < launchers.REMOTE_CONNECT_TIMEOUT_S
    assert (
        f"the pytorch service at {address} speaks TLS and fwbench connected in plaintext: give "
        "--tls-ca FILE"
    ) in plaintext
    other = pki["other_pem"]
    wrong_ca, took_s = remote_run(address, tmp_path / "out", "--tls-ca", other)
    assert took_s < launchers.REMOTE_CONNECT_TIMEOUT_S
    assert (
        f"the certificate of the pytorch service at {address} is not signed by the CA in {other}"
    ) in wrong_ca
    assert not (tmp_path / "out").exists()


def test_fwbench_says_at_once_that_a_service_does_not_speak_tls(services, pki, tmp_path):
    address = f"127.0.0.1:{services('pytorch').port}"  # plaintext on loopback
    output, took_s = remote_run(address, tmp_path / "out", "--tls-ca", pki["ca_pem"])
    assert took_s < launchers.REMOTE_CONNECT_TIMEOUT_S
    assert (
        f"the pytorch service at {address} does not speak TLS (it answered in plaintext): drop "
        f"--tls-ca {pki['ca_pem']}"
    ) in output


def test_the_healthcheck_reads_the_ca_from_the_environment(secured, pki):
    # docker-compose.tls.yml keeps compose's healthcheck command and sets $FWBENCH_TLS_CA.
    check = [venv_python("pytorch"), "-m", "services.common.healthcheck"]
    check += [f"127.0.0.1:{secured.port}", "--server-name", "localhost"]
    said = {
        name: subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=30, env=env)
        for name, env in (("with", {security.TLS_CA_ENV: str(pki["ca_pem"])}), ("without", {}))
    }
    assert said["with"].returncode == 0 and "SERVING" in said["with"].stdout, said["with"]
    assert said["without"].returncode == 1 and "UNAVAILABLE" in said["without"].stdout


def test_fwbench_takes_the_ca_and_the_token_file_from_the_environment(secured, pki, tmp_path):
    # What docker-compose.tls.yml gives the orchestrator's container, whatever command it runs.
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    command = [ROOT / ".venvs" / "orchestrator" / "bin" / "fwbench", "run", "--launcher", "remote"]
    command += ["--service", f"pytorch=localhost:{secured.port}", "--frameworks", "pytorch"]
    command += ["--models", "mobilenet", "--train-limit", "64", "--test-limit", "32"]
    command += ["--epochs", "1", "--device", "cpu"]
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "1000", security.TLS_CA_ENV: str(pki["ca_pem"])}
    done = subprocess.run(
        [*command, "--out", tmp_path / "ok"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=env | {"FWBENCH_TOKEN_FILE": str(token_file)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    missing = subprocess.run(
        [*command, "--out", tmp_path / "missing"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=env | {"FWBENCH_TOKEN_FILE": str(tmp_path / "nowhere")},
    )  # fmt: skip
    assert missing.returncode == 2
    assert f"--token-file (or $FWBENCH_TOKEN_FILE) {tmp_path / 'nowhere'}: cannot be read" in (
        " ".join(missing.stdout.split())
    )
