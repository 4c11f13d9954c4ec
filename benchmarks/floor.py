"""The fastest each framework runs each model's training step on this device, with the host out of
the way: the floor that its runs are measured against ("tuned is 1.2x the floor").

    .venvs/orchestrator/bin/python -m benchmarks.floor --frameworks pytorch,jax \
        --models resnet50,mobilenet_v2 --batch-size 32 --out results/floor

The same model, shared initial weights, optimizer (the seed spec's) and precision (the tuned
mode's, tf32, unless --precision says otherwise) as fwbench's runs, each framework at its fastest
(benchmarks/floors/<framework>.py): PyTorch's whole step in a CUDA graph, JAX's tuned program of
K steps per dispatch, TensorFlow's XLA train function with K steps per execution; each on one
resident batch, with no input pipeline or recorder. Each framework runs in its own environment
(.venvs/<framework>), one after another. Prints ms/step (median and p90) per framework and model
and writes floor.csv, which a results directory's report reads ("Against the hardware floor").
--device cpu runs the same code, labelled a check of the code, not a floor.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.floors import common
from orchestrator.inputs.options import csv_choice
from orchestrator.results import schema
from orchestrator.running import launchers
from services.common import frameworks

FLOORS = Path(__file__).resolve().parent / "floors"


def measurable_frameworks() -> list[str]:
    """The registered frameworks that have a floor (benchmarks/floors/<name>.py)."""
    return [f for f in frameworks.NAMES if (FLOORS / f"{f}.py").exists()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    measurable = tuple(measurable_frameworks())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--frameworks",
        type=csv_choice(measurable, "framework (with a benchmarks/floors/<name>.py)"),
        default=list(measurable),
        help="comma-separated",
    )
    common.add_job_options(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/floor"),
        help="where floor.csv goes; a results directory gets a section in its report",
    )
    args = p.parse_args(argv)
    common.check_job_options(p, args)
    return args


def measure(framework: str, args: argparse.Namespace, rows_file: Path) -> int:
    """Runs the framework's floor in its own environment; its rows are appended to rows_file.
    Its output goes straight to ours, line by line as it measures."""
    command = [
        str(launchers.venv_python(framework)),
        "-m",
        f"benchmarks.floors.{framework}",
        *common.job_argv(args),
        "--rows",
        str(rows_file),
    ]
    return subprocess.run(command, cwd=launchers.ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_code = 0
    with tempfile.TemporaryDirectory(prefix="fwbench-floor-") as work:
        rows_file = Path(work) / "rows.jsonl"
        rows_file.touch()
        for framework in args.frameworks:
            code = measure(framework, args, rows_file)
            if code:
                print(
                    f"benchmarks/floor.py: {framework}'s floor exited with {code}", file=sys.stderr
                )
                exit_code = exit_code or code
        rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    # What was measured is kept, also when a framework failed.
    if rows:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / schema.FLOOR_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=schema.FLOOR_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
