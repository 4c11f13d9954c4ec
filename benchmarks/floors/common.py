"""What every framework's floor (benchmarks/floors/<framework>.py) shares: the job's options, the
spec built from them, the statistics of the timings and the row they make.

A framework's module runs in that framework's environment,

    .venvs/<framework>/bin/python -m benchmarks.floors.<framework> --models ... --rows FILE

prints one line per model and appends one JSON row per model to FILE, which benchmarks/floor.py
collects into floor.csv. The module gives `main` two functions: open_device(name) -> (device,
device name as its trainer reports it), raising SpecError where the device is missing; and
measure(spec, device, replays, steps_per_call) -> (each timed call's milliseconds per step, the
method in words).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fwbench.v1 import trainer_pb2 as pb
from services.common import schedule
from services.common import spec as specs
from services.common.recorder import median_and_p90
from services.common.spec import SpecError

REPLAYS = 200
# CIFAR-10's: the floor is for the seed's job (a spec's own head comes from its dataset).
NUM_CLASSES = 10
# Calls before the clock starts: compilation, autotuning, allocation.
WARMUP_CALLS = 3
CPU_CHECK = "on the CPU: a check of the code, not a floor"
# The options every framework's floor takes, as benchmarks/floor.py passes them on.
JOB_OPTIONS = (
    "models",
    "batch_size",
    "precision",
    "num_classes",
    "device",
    "replays",
    "steps_per_call",
)


def add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=",".join(specs.MODELS), help="comma-separated")
    p.add_argument("--batch-size", type=int, default=specs.DEFAULTS["batch_size"])
    # The floor is the tuned job: at the tuned mode's precision unless told otherwise.
    p.add_argument(
        "--precision",
        default=specs.PRECISION_FOR_MODE["tuned"],
        choices=specs.PRECISIONS,
        help="(default: %(default)s, the tuned mode's)",
    )
    p.add_argument("--num-classes", type=int, default=NUM_CLASSES, help="the head's outputs")
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help=f"cpu: the same code, labelled so: {CPU_CHECK}",
    )
    p.add_argument(
        "--replays", type=int, default=REPLAYS, help="timed calls (replays, dispatches, executions)"
    )
    p.add_argument(
        "--steps-per-call",
        type=int,
        default=schedule.TUNED_STEPS_PER_EXECUTION,
        help="JAX and TensorFlow: training steps per compiled call (the tuned mode's by default); "
        "PyTorch's CUDA graph is one step",
    )


def check_job_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses what cannot be measured, through p.error (exit 2), and splits --models."""
    args.models = args.models.split(",")
    for name in args.models:
        if name not in specs.MODELS:
            p.error(f"model {name} not known; choose from {', '.join(specs.MODELS)}")
    for option in ("batch_size", "num_classes", "replays", "steps_per_call"):
        if getattr(args, option) < 1:
            p.error(f"--{option.replace('_', '-')} must be at least 1, not {getattr(args, option)}")


def job_argv(args: argparse.Namespace) -> list[str]:
    """args' job options as a command line that add_job_options parses back."""
    argv = []
    for option in JOB_OPTIONS:
        value = getattr(args, option)
        argv += [
            f"--{option.replace('_', '-')}",
            ",".join(value) if option == "models" else str(value),
        ]
    return argv


def job_spec(args: argparse.Namespace, model: str) -> pb.TrainSpec:
    """The seed spec's job for one model (optimizer, seed, shared weights), in the tuned mode
    (each framework's fastest settings) at the floor's batch size and precision."""
    return specs.with_defaults(
        pb.TrainSpec(
            model=pb.ModelSpec(name=model, num_classes=args.num_classes),
            batch_size=args.batch_size,
            precision=args.precision,
            mode="tuned",
            device=args.device,
        )
    )


def per_step_ms(call: Callable[[], None], replays: int, steps_per_call: int) -> list[float]:
    """Milliseconds per step of each of `replays` timed calls, each of steps_per_call steps and
    waiting for its last one, after WARMUP_CALLS untimed calls (compilation, autotuning)."""
    for _ in range(WARMUP_CALLS):
        call()
    times_ms = []
    for _ in range(replays):
        start_s = time.perf_counter()
        call()
        times_ms.append((time.perf_counter() - start_s) * 1000 / steps_per_call)
    return times_ms


def row(
    framework: str,
    args: argparse.Namespace,
    model: str,
    device_name: str,
    step_ms: list[float],
    method: str,
) -> dict[str, object]:
    """floor.csv's row (schema.FLOOR_COLUMNS): the median and p90 of the calls' ms/step,
    interpolated as the recorder's step times are."""
    median, p90 = median_and_p90(step_ms)
    return {
        "framework": framework,
        "model": model,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "device_name": device_name,
        "step_ms_median": round(median, 3),
        "step_ms_p90": round(p90, 3),
        "method": method if args.device == "cuda" else f"{method}; {CPU_CHECK}",
    }


def main(framework: str, open_device: Callable, measure: Callable) -> int:
    p = argparse.ArgumentParser(description=f"{framework}'s floor (see benchmarks/floor.py)")
    add_job_options(p)
    p.add_argument("--rows", type=Path, help="append each model's row to this file, as JSON")
    args = p.parse_args()
    check_job_options(p, args)
    try:
        device, device_name = open_device(args.device)
    except SpecError as e:
        print(f"benchmarks.floor needs a CUDA GPU: {e}", file=sys.stderr)
        return 2
    for model in args.models:
        step_ms, method = measure(job_spec(args, model), device, args.replays, args.steps_per_call)
        measured = row(framework, args, model, device_name, step_ms, method)
        print(
            f"{framework:10} {model:13} batch {args.batch_size}: "
            f"{measured['step_ms_median']:.2f} ms/step (p90 {measured['step_ms_p90']:.2f}) "
            f"on {device_name}",
            flush=True,
        )
        if args.rows:
            with args.rows.open("a") as rows:
                rows.write(json.dumps(measured) + "\n")
    return 0
