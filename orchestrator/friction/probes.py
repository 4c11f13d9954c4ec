"""Probes that run a framework: import time, time to first step, and both frameworks in one
process (the shared-environment probe)."""

from __future__ import annotations

import math
import re
import signal
import statistics
import subprocess
import time
from pathlib import Path

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.friction.common import (
    FIRST_STEP_BATCH,
    FIRST_STEP_TRAIN_LIMIT,
    PROBE_TIMEOUT_S,
    ROOT,
    Row,
    Subject,
    output_tail,
)
from orchestrator.inputs.options import synthetic_spec
from orchestrator.running import launchers
from orchestrator.running.client import TrainerClient


def import_seconds(python: Path, imports: str) -> float:
    """Seconds `imports` takes in a fresh interpreter (interpreter start-up excluded)."""
    code = (
        f"import time\nstart = time.perf_counter()\n{imports}\nprint(time.perf_counter() - start)"
    )
    result = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
    )
    if result.returncode != 0:
        raise ImportFailed(output_tail(result.stderr, 3) or f"exit {result.returncode}")
    return float(result.stdout.strip().splitlines()[-1])


class ImportFailed(Exception):
    pass


def import_rows(framework: str, python: Path, imports: str, repeats: int) -> list[Row]:
    try:
        cold = import_seconds(python, imports)
        warm = [import_seconds(python, imports) for _ in range(repeats)]
    except ImportFailed as e:  # a broken environment is a finding too
        return [Row(framework, "import_cold_s", math.nan, "s", f"`{imports}` failed: {e}")]
    return [
        Row(framework, "import_cold_s", round(cold, 3), "s", f"`{imports}`, first after the build"),
        Row(
            framework,
            "import_warm_s",
            round(statistics.median(warm), 3),
            "s",
            f"median of {repeats} fresh interpreters (min {min(warm):.2f}, max {max(warm):.2f})",
        ),
    ]


def first_step_rows(
    framework: str, python: Path, models: list[str], log_dir: Path, status
) -> list[Row]:
    """Time to first step per model, from a TrainerService running in `python`'s environment."""
    rows = []
    with launchers.local([framework], log_dir, {framework: python}) as launched:
        client = TrainerClient(framework, launched.address(framework))
        try:
            for model in models:
                status.update(f"{framework}: first training step of {model}")
                spec = synthetic_spec(
                    model,
                    train_limit=FIRST_STEP_TRAIN_LIMIT,
                    test_limit=FIRST_STEP_BATCH,
                    batch_size=FIRST_STEP_BATCH,
                    run_id=f"friction-{model}",
                )
                rows.append(_first_step(framework, model, client, spec))
        finally:
            client.close()
    return rows


def _first_step(framework: str, model: str, client: TrainerClient, spec: pb.TrainSpec) -> Row:
    measure = f"time_to_first_step_s[{model}]"
    outcome = client.run(spec)
    if not outcome.ok:
        return Row(framework, measure, math.nan, "s", outcome.error)
    started, end = outcome.started, outcome.end
    detail = (
        f"on {started.device_name}: import {started.import_s:.2f} + data "
        f"{started.data_load_s:.2f} + build {started.build_s:.2f} s, first step "
        f"{end.first_step_s:.2f} s"
    )
    return Row(framework, measure, round(end.time_to_first_step_s, 3), "s", detail)


def probe_one_process(python: Path, order: tuple[Subject, ...]) -> tuple[str, str]:
    """Imports the frameworks in `order` in one fresh interpreter, then trains a step of each:
    ('ok' or what went wrong, detail). Each stage prints a marker before and after it, so that
    the last marker tells which stage a crash interrupted."""
    code = []
    for verb, done, attribute in (
        ("importing", "imported", "imports"),
        ("stepping", "stepped", "step"),
    ):
        for framework in order:
            code += [
                f"print('{verb} {framework.name}', flush=True)",
                getattr(framework, attribute),
                f"print('{done} {framework.name}', flush=True)",
            ]
    source = "\n".join(code)
    start = time.perf_counter()
    try:
        # faulthandler: on a fatal signal, Python prints where the interpreter was.
        result = subprocess.run(
            [str(python), "-X", "faulthandler", "-c", source],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return f"hung (killed after {PROBE_TIMEOUT_S} s)", ""
    markers = result.stdout.splitlines()
    done = [m for m in markers if m.startswith(("imported ", "stepped "))]
    progress = f"done: {', '.join(done) or 'nothing'}; {time.perf_counter() - start:.1f} s"
    if result.returncode == 0:
        return "ok", progress
    if result.returncode > 0:  # a Python exception: its last line says what
        return f"failed: exit {result.returncode}", f"{progress}; {output_tail(result.stderr, 1)}"
    what = f"crashed: {signal.Signals(-result.returncode).name} (exit {result.returncode})"
    during = f"; while {markers[-1]}" if markers and markers[-1] not in done else ""
    return what, f"{progress}{during}{_innermost_frame(result.stderr, source)}"


def _innermost_frame(stderr: str, source: str) -> str:
    """Where faulthandler's dump (most recent call first) says Python was, past importlib."""
    for file, line in re.findall(r'File "(.+?)", line (\d+)', stderr):
        if file == "<string>":
            return f"; at `{source.splitlines()[int(line) - 1].strip()}`"
        if not file.startswith("<frozen"):
            return f"; innermost Python frame {file.rpartition('site-packages/')[2]}:{line}"
    return ""
