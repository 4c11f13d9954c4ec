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

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class LauncherError(Exception):
    pass


def venv_python(framework: str) -> Path:
    return ROOT / ".venvs" / framework / "bin" / "python"


@contextlib.contextmanager
def local(
    frameworks: list[str], log_dir: Path, pythons: dict[str, Path] | None = None
) -> Iterator[dict[str, str]]:
    """Starts one service per framework from .venvs/<framework>, or from the interpreter that
    `pythons` names for it (fwbench friction's fresh environments); logs go to log_dir."""
    pythons = {f: (pythons or {}).get(f, venv_python(f)) for f in frameworks}
    missing = [f for f in frameworks if not pythons[f].exists()]
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
    processes: list[subprocess.Popen] = []
    try:
        addresses = {}
        for framework in frameworks:
            process, address = _start(
                framework, pythons[framework], log_dir / f"{framework}-service.log"
            )
            processes.append(process)
            addresses[framework] = address
        for framework, address in addresses.items():
            TrainerClient(framework, address).wait_until_serving(START_TIMEOUT_S)
        yield addresses
    finally:
        for process in processes:
            _stop(process)


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
def remote(frameworks: list[str], services: dict[str, str]) -> Iterator[dict[str, str]]:
    """Services already running; `services` maps framework to HOST:PORT."""
    missing = [f for f in frameworks if f not in services]
    if missing:
        raise LauncherError(
            "--launcher remote needs an address for "
            + ", ".join(missing)
            + ": pass --service "
            + " --service ".join(f"{f}=HOST:PORT" for f in missing)
        )
    for framework in frameworks:
        try:
            TrainerClient(framework, services[framework]).wait_until_serving(START_TIMEOUT_S)
        except ServiceUnavailable as e:
            raise LauncherError(str(e)) from e
    yield {f: services[f] for f in frameworks}


def parse_services(values: list[str]) -> dict[str, str]:
    services = {}
    for value in values:
        name, sep, address = value.partition("=")
        if not sep or ":" not in address:
            raise LauncherError(
                f"--service {value!r}: expected NAME=HOST:PORT, e.g. pytorch=localhost:50051"
            )
        services[name] = address
    return services
