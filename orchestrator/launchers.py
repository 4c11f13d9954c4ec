"""Where the framework services come from.

- local (the embedded default): start each service from its own virtualenv (.venvs/<framework>)
  on a free loopback port, wait for health SERVING, stop it afterwards;
- remote: services already running at given addresses (docker compose, another host).

Both yield {framework: address}; everything after that is the same code path and protocol.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from orchestrator.client import ServiceUnavailable, TrainerClient
from orchestrator.errors import UserError
from services.common import frameworks
from services.common.frameworks import ROOT

START_TIMEOUT_S = 60
# A service that is not there yet (a container still starting) gets this long; one that refuses
# connections for all of it is not coming.
REMOTE_CONNECT_TIMEOUT_S = 15
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class LauncherError(UserError):
    """The services cannot be had: no environment, nothing listening, a bad --service."""


def venv_python(framework: str) -> Path:
    return ROOT / ".venvs" / framework / "bin" / "python"


class Addresses(dict):
    """{framework: HOST:PORT} of the services a launcher provides. `revive(framework)` brings a
    dead service back where the launcher can (the local one restarts its process) and returns its
    new address, or None where it cannot (remote services restart by their own means)."""

    def revive(self, framework: str) -> str | None:
        return None


class _LocalServices(Addresses):
    def __init__(self, pythons: dict[str, Path], log_dir: Path):
        super().__init__()
        self._pythons = pythons
        self._log_dir = log_dir
        self._processes: dict[str, subprocess.Popen] = {}

    def start(self, framework: str) -> str:
        process, address = _start(
            framework, self._pythons[framework], self._log_dir / f"{framework}-service.log"
        )
        self._processes[framework] = process
        self[framework] = address
        return address

    def revive(self, framework: str) -> str | None:
        if self._processes[framework].poll() is None:
            return None  # alive: nothing to bring back
        address = self.start(framework)
        TrainerClient(framework, address).wait_until_serving(START_TIMEOUT_S)
        return address

    def stop(self) -> None:
        for process in self._processes.values():
            _stop(process)


@contextlib.contextmanager
def local(
    wanted: list[str], log_dir: Path, pythons: dict[str, Path] | None = None
) -> Iterator[Addresses]:
    """Starts one service per framework from .venvs/<framework>, or from the interpreter that
    `pythons` names for it (fwbench friction's fresh environments); logs go to log_dir."""
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
    services = _LocalServices(pythons, log_dir)
    try:
        for framework in wanted:
            services.start(framework)
        for framework, address in services.items():
            TrainerClient(framework, address).wait_until_serving(START_TIMEOUT_S)
        yield services
    finally:
        services.stop()


def _start(framework: str, python: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    log = open(log_path, "ab")  # noqa: SIM115 - the service writes to it for its whole life
    process = subprocess.Popen(
        [
            str(python),
            "-u",
            "-m",
            "services.common.server",
            "--framework",
            framework,
            "--port",
            "0",
            "--parent-pid",
            str(os.getpid()),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        # The project root goes first; whatever the user had on PYTHONPATH stays after it.
        env=os.environ
        | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
        start_new_session=True,
    )
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
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def remote(wanted: list[str], services: dict[str, str]) -> Iterator[Addresses]:
    """Services already running; `services` (parse_services) maps framework to HOST:PORT."""
    for framework in wanted:
        client = TrainerClient(framework, services[framework])
        try:
            client.wait_until_serving(REMOTE_CONNECT_TIMEOUT_S, fail_fast=True)
        except ServiceUnavailable as e:
            raise LauncherError(str(e)) from e
        finally:
            client.close()
    yield Addresses({f: services[f] for f in wanted})


def parse_services(values: list[str], wanted: list[str]) -> dict[str, str]:
    """{framework: HOST:PORT} of --service NAME=HOST:PORT options, checked before anything
    starts: a known framework, once each, a host, a port in 1..65535, one for every framework
    wanted."""
    services = {}
    for value in values:
        name, sep, address = value.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not host:
            raise LauncherError(
                f"--service {value!r}: expected NAME=HOST:PORT, e.g. pytorch=localhost:50051"
            )
        if name not in frameworks.NAMES:
            raise LauncherError(
                f"--service {value!r}: {name!r} is not a framework; "
                f"expected one of {', '.join(frameworks.NAMES)}"
            )
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise LauncherError(f"--service {value!r}: port {port!r} is not a number in 1..65535")
        if name in services:
            raise LauncherError(f"--service {name}=... is given twice; give each framework once")
        services[name] = address
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


class Clients(dict):
    """{framework: TrainerClient}, with the launcher behind them to revive a dead service."""

    def __init__(self, addresses: Addresses):
        super().__init__({f: TrainerClient(f, a) for f, a in addresses.items()})
        self._addresses = addresses

    def revive(self, framework: str) -> bool:
        """Restarts a dead service where the launcher can; True when it was restarted."""
        address = self._addresses.revive(framework)
        if address is None:
            return False
        self[framework].close()
        self[framework] = TrainerClient(framework, address)
        return True

    def close(self) -> None:
        for client in self.values():
            client.close()
