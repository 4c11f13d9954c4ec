"""Where the framework services come from.

- local (the embedded default): start each service from its own virtualenv (.venvs/<framework>)
  on a free loopback port, wait for health SERVING, stop it afterwards; with `gpus`, one service
  per framework and GPU (`--parallel N`), or group of GPUs (with `--gpus`), each seeing only its
  own;
- remote: services already running at given addresses (docker compose, Kubernetes, other hosts);
  `dns:///HOST:PORT` stands for every address HOST resolves to (a Kubernetes headless Service).

Both yield a Launched: the services' endpoints, one or more per framework. Everything after that
is the same code path and protocol.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.running.client import PLAINTEXT, ClientSecurity, ServiceUnavailable, TrainerClient
from services.common import frameworks
from services.common.frameworks import ROOT

START_TIMEOUT_S = 60
# A local service that still runs answers health at once, even while it trains; one that does not
# answer within this is hung, or dying.
LOCAL_HEALTH_TIMEOUT_S = 5
# A service that is not there yet (a container still starting) gets this long; one that refuses
# connections for all of it is not coming.
REMOTE_CONNECT_TIMEOUT_S = 15
_LISTENING = re.compile(r"listening on (\S+):(\d+)")
DNS_PREFIX = "dns:///"


class LauncherError(UserError):
    """The services cannot be had: no environment, nothing listening, a bad --service."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One running service: its framework and HOST:PORT."""

    framework: str
    address: str


class Launched:
    """The services a launcher provides. `revive(endpoint)` brings a dead one back where the
    launcher can (the local one restarts its process) and returns its new endpoint, or None where
    it cannot (remote services restart by their own means: compose, Kubernetes)."""

    def __init__(
        self, endpoints: list[Endpoint] | None = None, secured: ClientSecurity = PLAINTEXT
    ):
        self.endpoints: list[Endpoint] = list(endpoints or [])
        # How clients reach these services (TLS, token); local services are plaintext on loopback.
        self.secured = secured

    def address(self, framework: str) -> str:
        """The first service of a framework."""
        return next(e.address for e in self.endpoints if e.framework == framework)

    def revive(self, endpoint: Endpoint) -> Endpoint | None:
        return None


def venv_python(framework: str) -> Path:
    return ROOT / ".venvs" / framework / "bin" / "python"


class _LocalServices(Launched):
    def __init__(self, pythons: dict[str, Path], log_dir: Path, data_roots: list[Path]):
        super().__init__()
        self._pythons = pythons
        self._log_dir = log_dir
        self._data_roots = data_roots
        self._processes: dict[Endpoint, tuple[subprocess.Popen, str | None]] = {}

    def start(self, framework: str, gpu: str | None) -> Endpoint:
        # A group of GPUs (--parallel with --gpus) is named by its members: pytorch-gpu2-3.
        name = framework if gpu is None else f"{framework}-gpu{gpu.replace(',', '-')}"
        process, address = _start(
            framework,
            self._pythons[framework],
            self._log_dir / f"{name}-service.log",
            gpu,
            self._data_roots,
        )
        endpoint = Endpoint(framework, address)
        self._processes[endpoint] = (process, gpu)
        self.endpoints.append(endpoint)
        return endpoint

    def revive(self, endpoint: Endpoint) -> Endpoint | None:
        process, gpu = self._processes[endpoint]
        if process.poll() is None and _serving(endpoint, LOCAL_HEALTH_TIMEOUT_S):
            return None  # alive and serving: nothing to bring back
        # Exited, killed but not yet reaped (poll() says "running" until the kernel has reaped
        # it), or hung: end it for certain and wait for its exit before another takes its place.
        _kill(process)
        del self._processes[endpoint]
        self.endpoints.remove(endpoint)
        revived = self.start(endpoint.framework, gpu)
        _wait_serving(revived, START_TIMEOUT_S)
        return revived

    def stop(self) -> None:
        for process, _ in self._processes.values():
            _stop(process)


@contextlib.contextmanager
def local(
    wanted: list[str],
    log_dir: Path,
    pythons: dict[str, Path] | None = None,
    gpus: list[str] | None = None,
    data_roots: list[Path] | None = None,
) -> Iterator[Launched]:
    """Starts one service per framework from .venvs/<framework>, or from the interpreter that
    `pythons` names for it (fwbench friction's fresh environments); with gpus, one per framework
    and entry, a GPU or a comma-separated group of them (CUDA_VISIBLE_DEVICES set to it). The
    services may read datasets under data_roots (default: the repository's data/). Logs go to
    log_dir."""
    pythons = {f: (pythons or {}).get(f, venv_python(f)) for f in wanted}
    missing = [f for f in wanted if not pythons[f].exists()]
    if missing:
        raise LauncherError(
            "no environment for "
            + ", ".join(missing)
            + " (expected "
            + ", ".join(f".venvs/{f}" for f in missing)
            + "): create it with `make setup` "
            "(or `scripts/setup-env NAME`) in " + str(ROOT)
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    services = _LocalServices(pythons, log_dir, data_roots or [ROOT / "data"])
    try:
        for gpu in gpus or [None]:
            for framework in wanted:
                services.start(framework, gpu)
        for endpoint in services.endpoints:
            _wait_serving(endpoint, START_TIMEOUT_S)
        yield services
    finally:
        services.stop()


def _wait_serving(
    endpoint: Endpoint,
    timeout_s: float,
    fail_fast: bool = False,
    secured: ClientSecurity = PLAINTEXT,
) -> None:
    client = TrainerClient(endpoint.framework, endpoint.address, secured)
    try:
        client.wait_until_serving(timeout_s, fail_fast=fail_fast)
    except ServiceUnavailable as e:
        raise LauncherError(str(e)) from e
    finally:
        client.close()


def _serving(endpoint: Endpoint, timeout_s: float) -> bool:
    client = TrainerClient(endpoint.framework, endpoint.address)
    try:
        return client.serving(timeout_s)
    finally:
        client.close()


def _start(
    framework: str, python: Path, log_path: Path, gpu: str | None, data_roots: list[Path]
) -> tuple[subprocess.Popen, str]:
    log = open(log_path, "ab")  # noqa: SIM115 - the service writes to it for its whole life
    env = os.environ | {
        # The project root goes first; whatever the user had on PYTHONPATH stays after it.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    }
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    process = subprocess.Popen(
        [str(python), "-u", "-m", "services.common.server", "--framework", framework,
         "--port", "0", "--parent-pid", str(os.getpid()),
         *(a for root in data_roots for a in ("--data-root", str(root)))],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        start_new_session=True,
    )  # fmt: skip
    line = _first_line(process, START_TIMEOUT_S)
    match = _LISTENING.search(line)
    if not match:
        _stop(process)
        raise LauncherError(
            f"the {framework} service did not start (exit code {process.poll()}); "
            f"see its log {log_path}:\n{_tail(log_path)}"
        )
    # Nothing else is read from stdout: keep draining it so the service never blocks on it.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return process, f"127.0.0.1:{match.group(2)}"


def _first_line(process: subprocess.Popen, timeout_s: float) -> str:
    result = [""]
    reader = threading.Thread(
        target=lambda: result.__setitem__(0, process.stdout.readline().decode()), daemon=True
    )
    reader.start()
    reader.join(timeout_s)
    return result[0]


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # graceful: the server stops its worker first
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _kill(process)


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL to the service's process group, then wait until the process has exited."""
    if process.poll() is None:  # not reaped yet, so its pid cannot have been reused
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def remote(
    services: dict[str, list[str]], secured: ClientSecurity = PLAINTEXT
) -> Iterator[Launched]:
    """Services already running; `services` (parse_services) maps framework to HOST:PORTs."""
    endpoints = [
        Endpoint(f, a) for f, addresses in services.items() for a in _resolve(f, addresses)
    ]
    for endpoint in endpoints:
        _wait_serving(endpoint, REMOTE_CONNECT_TIMEOUT_S, fail_fast=True, secured=secured)
    yield Launched(endpoints, secured)


def _resolve(framework: str, addresses: list[str]) -> list[str]:
    """HOST:PORTs, with each dns:///HOST:PORT replaced by every address HOST resolves to. Every
    host must resolve now: a name that does not is a typo or another network's, which the wait
    for a starting service (REMOTE_CONNECT_TIMEOUT_S) would only delay and blur."""
    resolved = []
    for address in addresses:
        host, _, port = address.removeprefix(DNS_PREFIX).rpartition(":")
        try:
            infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise LauncherError(
                f"--service {framework}={address}: the host {host} does not resolve "
                f"({e.strerror}): check its name, or give its IP address"
            ) from e
        if not address.startswith(DNS_PREFIX):
            resolved.append(address)  # as given: TLS checks the certificate against this name
            continue
        ips = sorted({info[4][0] for info in infos})
        resolved += [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in ips]
    return resolved


def parse_services(values: list[str], wanted: list[str]) -> dict[str, list[str]]:
    """{framework: [HOST:PORT, ...]} of --service NAME=HOST:PORT options (a framework may have
    several: a pool), checked before anything starts: a known framework, a host, a port in
    1..65535, no address twice, one at least for every framework wanted."""
    services: dict[str, list[str]] = {}
    for value in values:
        name, sep, address = value.partition("=")
        host, colon, port = address.removeprefix(DNS_PREFIX).rpartition(":")
        if not sep or not colon or not host:
            raise LauncherError(
                f"--service {value!r}: expected NAME=HOST:PORT (or NAME=dns:///HOST:PORT for "
                "every address HOST resolves to), e.g. pytorch=localhost:50051"
            )
        if name not in frameworks.NAMES:
            raise LauncherError(
                f"--service {value!r}: {name!r} is not a framework; "
                f"expected one of {', '.join(frameworks.NAMES)}"
            )
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise LauncherError(f"--service {value!r}: port {port!r} is not a number in 1..65535")
        if address in services.get(name, []):
            raise LauncherError(f"--service {value!r} is given twice")
        services.setdefault(name, []).append(address)
    missing = [f for f in wanted if f not in services]
    if missing:
        raise LauncherError(
            "--launcher remote needs an address for "
            + ", ".join(missing)
            + ": pass --service "
            + " --service ".join(f"{f}=HOST:PORT" for f in missing)
        )
    unused = [f for f in services if f not in wanted]
    if unused:
        raise LauncherError(
            f"--service for {', '.join(unused)}, which --frameworks does not include: "
            "drop it or add the framework"
        )
    return services
