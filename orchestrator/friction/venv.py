"""Building a fresh environment, as scripts/setup-env does, and measuring it on disk."""

from __future__ import annotations

import collections
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.markup import escape

from orchestrator.friction.common import (
    OUTPUT_TAIL_LINES,
    ROOT,
)


@dataclasses.dataclass
class Build:
    ok: bool
    seconds: float
    output_tail: str


def stream_output(cmd: list[str], env: dict, status, label: str) -> tuple[int, str]:
    """Runs cmd, showing its latest output line on the status line; (exit code, output tail).
    No time limit: pip and docker have their own network timeouts, and Ctrl-C stops both."""
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    ) as process:
        for line in process.stdout:
            if line.strip():
                tail.append(line.rstrip())
                status.update(escape(f"{label}: {line.strip()[:100]}"))
    return process.returncode, "\n".join(tail)


def build_venv(directory: Path, requirements: list[Path], status, label: str) -> tuple[Path, Build]:
    """A fresh venv in directory/venv with requirements installed, as scripts/setup-env builds
    one, with a pip cache of its own in directory/pip-cache (cold): (its python, the build)."""
    venv = directory / "venv"
    env = os.environ | {
        "PIP_CACHE_DIR": str(directory / "pip-cache"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_PROGRESS_BAR": "off",
    }
    python = venv / "bin" / "python"
    requirement_args = [arg for path in requirements for arg in ("-r", str(path))]
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", *requirement_args],
    ]
    start = time.perf_counter()
    for cmd in steps:
        code, tail = stream_output(cmd, env, status, label)
        if code != 0:
            return python, Build(False, time.perf_counter() - start, tail)
    return python, Build(True, time.perf_counter() - start, "")


def size_on_disk(path: Path) -> int:
    """Bytes that path's files occupy (hard links once, symbolic links not followed)."""
    seen, total = set(), 0
    for folder, _, files in os.walk(path):
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total
