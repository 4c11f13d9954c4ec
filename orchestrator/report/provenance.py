"""Where a result came from: fwbench's version and commit, the host, the GPUs.

`collect()` is called when context.json is written (framework-free: platform, /proc, psutil and
NVML when installed, git); the report reads what it recorded and shows "not recorded" otherwise.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def fwbench_facts() -> dict:
    try:
        version = metadata.version("fwbench")
    except metadata.PackageNotFoundError:
        version = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "version": version,
        "git_commit": _git("rev-parse", "HEAD"),
        # None when there is no git checkout (an installed copy, a container image).
        "git_dirty": None if status is None else bool(status),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_bytes() -> int | None:
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().total)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gpus() -> tuple[list[dict], str | None]:
    try:
        import pynvml
    except ImportError:
        return [], None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        # No driver or no GPU: the host simply has no GPU to report.
        return [], None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                {
                    "index": index,
                    "name": pynvml.nvmlDeviceGetName(handle),
                    "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                    "uuid": pynvml.nvmlDeviceGetUUID(handle),
                }
            )
        return gpus, driver
    finally:
        pynvml.nvmlShutdown()


def host_facts() -> dict:
    gpus, driver = _gpus()
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "gpus": gpus,
        "driver": driver,
    }


def collect() -> dict:
    """The context.json keys "fwbench", "host" and "utc_start", for the moment it is called."""
    return {
        "fwbench": fwbench_facts(),
        "host": host_facts(),
        "utc_start": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
