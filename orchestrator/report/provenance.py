"""Where a result came from: fwbench's version and commit, the host, the GPUs.

`collect()` is called when context.json is written (framework-free: platform, /proc, psutil and
NVML when installed, git); the report reads what it recorded and shows "not recorded" otherwise.

fwbench's commit comes from git in a checkout, else from the build record that
scripts/write-build-record leaves at install or image build time (BUILD_RECORD), else it is said
unknown: a copy of the source without .git (an archive, a container image) still names its
version and, where it was built with one, its commit.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Written by scripts/write-build-record (scripts/setup-env, the Dockerfiles); not in git.
BUILD_RECORD = ROOT / "fwbench-build.json"
UNKNOWN_COMMIT = "unknown (not a git checkout, no build record)"


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _source_version() -> str | None:
    """The version pyproject.toml of this source names, which an install would record."""
    try:
        return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return None


def build_record() -> dict:
    """BUILD_RECORD's content; {} where there is none (or it cannot be read)."""
    try:
        record = json.loads(BUILD_RECORD.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def fwbench_facts() -> dict:
    """fwbench's version and commit, and where the commit was read ("git checkout", "build
    record ..."), or `commit_source` UNKNOWN_COMMIT with the commit None."""
    record = build_record()
    try:
        version = metadata.version("fwbench")
    except metadata.PackageNotFoundError:
        version = record.get("version") or _source_version()
    commit = _git("rev-parse", "HEAD")
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no")
        return {
            "version": version,
            "git_commit": commit,
            "git_describe": _git("describe", "--tags", "--always", "--dirty"),
            "git_dirty": None if status is None else bool(status),
            "commit_source": "git checkout",
        }
    if record.get("git_commit"):
        return {
            "version": version,
            "git_commit": record["git_commit"],
            "git_describe": record.get("git_describe"),
            "git_dirty": record.get("git_dirty"),
            "commit_source": f"build record ({record.get('built_by') or 'unknown build'}, "
            f"{record.get('built_utc') or 'time unknown'})",
        }
    return {
        "version": version,
        "git_commit": None,
        "git_describe": None,
        "git_dirty": None,
        "commit_source": UNKNOWN_COMMIT,
    }


def describe(facts: dict) -> str:
    """fwbench's version and commit as one line: '0.1.0 · 1a2b3c4d5e6f (clean, git checkout)'."""
    version = facts.get("version") or "version unknown"
    commit = (facts.get("git_commit") or "")[:12]
    if not commit:
        # context.json of an older fwbench has no commit_source.
        return f"{version} · commit {facts.get('commit_source') or 'not recorded'}"
    dirty = {True: "uncommitted changes", False: "clean"}.get(facts.get("git_dirty"))
    source = facts.get("commit_source")
    notes = ", ".join(n for n in (dirty, source) if n)
    return f"{version} · {commit}" + (f" ({notes})" if notes else "")


def relative_link(target: Path, out_dir: Path) -> str | None:
    """`target` as a link from a report written in out_dir: relative, so that the report and
    what it links stay together when copied; None where there is no relative path (another
    drive)."""
    try:
        return os.path.relpath(Path(target).resolve(), Path(out_dir).resolve()).replace(os.sep, "/")
    except ValueError:
        return None


def source_link(target: Path, out_dir: Path) -> str | None:
    """A link from out_dir to `target`, a file of fwbench's source: only where out_dir lies in
    this source tree (results/… of a checkout), else None. Out of it, any path would be the
    building machine's own layout, which a reader of a copied report does not have."""
    if not Path(out_dir).resolve().is_relative_to(ROOT):
        return None
    return relative_link(target, out_dir)


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


# Per GPU, what NVML says beyond its name: the fields context.json records, each None where NVML
# does not report it for that GPU (not supported, no permission).
GPU_FIELDS = (
    "memory_bytes",
    "sm_clock_max_mhz",
    "sm_clock_mhz",
    "memory_clock_max_mhz",
    "memory_clock_mhz",
    "power_limit_w",
    "ecc_mode",
    "mig_mode",
)


def _gpu(pynvml, index: int) -> dict:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    readers = {
        "memory_bytes": lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
        "sm_clock_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
        "sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
        "memory_clock_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(
            handle, pynvml.NVML_CLOCK_MEM
        ),
        "memory_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
        "power_limit_w": lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000,
        # Current mode (the pending one applies after a reset).
        "ecc_mode": lambda: "on" if pynvml.nvmlDeviceGetEccMode(handle)[0] else "off",
        "mig_mode": lambda: "on" if pynvml.nvmlDeviceGetMigMode(handle)[0] else "off",
    }
    gpu = {
        "index": index,
        "name": pynvml.nvmlDeviceGetName(handle),
        "uuid": pynvml.nvmlDeviceGetUUID(handle),
    }
    for key in GPU_FIELDS:
        try:
            gpu[key] = readers[key]()
        except pynvml.NVMLError:
            gpu[key] = None
    return gpu


def _gpus() -> tuple[list[dict], str | None, str]:
    """The GPUs, the driver, and whether NVML could be asked: "read", or why not (then no GPU is
    recorded: a host without NVML is not said to have none)."""
    try:
        import pynvml
    except ImportError:
        return [], None, "absent (nvidia-ml-py not installed)"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        # No driver or no GPU: the host simply has no GPU to report.
        return [], None, f"absent ({e})"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        return [_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())], driver, "read"
    finally:
        pynvml.nvmlShutdown()


def host_facts() -> dict:
    gpus, driver, nvml = _gpus()
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "gpus": gpus,
        "driver": driver,
        "nvml": nvml,
    }


def collect() -> dict:
    """The context.json keys "fwbench", "host" and "utc_start", for the moment it is called."""
    return {
        "fwbench": fwbench_facts(),
        "host": host_facts(),
        "utc_start": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def host_lines(context: dict) -> list[str]:
    """The report's lines on the host beyond its header: the kernel and, per GPU, what NVML
    recorded (memory, clocks, power limit, ECC and MIG modes), or why nothing was."""
    host = context.get("host") or {}
    if not host:
        return []
    lines = [f"- Kernel: {host.get('kernel') or 'not recorded'}."]
    gpus = host.get("gpus") or []
    if not gpus:
        nvml = host.get("nvml") or "not recorded"
        lines.append(f"- GPUs: none recorded (NVML {nvml}).")
    for gpu in gpus:

        def shown(key: str, unit: str = "", gpu: dict = gpu) -> str:
            value = gpu.get(key)
            return "not reported" if value is None else f"{value:g}{unit}" if unit else value

        memory = gpu.get("memory_bytes")
        lines.append(
            f"- GPU {gpu.get('index', '?')}: {gpu.get('name', '?')}, "
            f"{'memory not reported' if memory is None else f'{memory / 2**30:.1f} GiB'}; "
            f"SM clock {shown('sm_clock_mhz', ' MHz')} (max {shown('sm_clock_max_mhz', ' MHz')}), "
            f"memory clock {shown('memory_clock_mhz', ' MHz')} "
            f"(max {shown('memory_clock_max_mhz', ' MHz')}); "
            f"power limit {shown('power_limit_w', ' W')}; ECC {shown('ecc_mode')}; "
            f"MIG {shown('mig_mode')}."
        )
    return lines
