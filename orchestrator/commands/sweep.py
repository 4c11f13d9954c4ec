"""`fwbench sweep DIR...`: throughput and GPU utilisation against batch size."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from orchestrator import report


def add_arguments(sub) -> None:
    swp = sub.add_parser(
        "sweep",
        help="throughput and GPU utilisation against batch size, over result sets alike but for "
        "the batch size (suites/batch-sweep/)",
    )
    swp.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="one result set per batch")
    swp.add_argument(
        "--out", type=Path, required=True, help="where sweep.md/sweep.html go (created if missing)"
    )
    swp.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    swept = report.sweep(args.dirs, args.out)
    for line in swept.verdict:
        console.print(line, markup=False)
    console.print(f"Sweep: {swept.html_path} (and {swept.markdown_path.name})")
    return 0
