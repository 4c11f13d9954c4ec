"""`fwbench compare A B`: ratio tables between two result sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from orchestrator import report


def add_arguments(sub) -> None:
    cmp = sub.add_parser(
        "compare",
        help="two result sets side by side: ratio tables (two versions, machines, default vs "
        "tuned), or the framework verdict where they trained different frameworks",
    )
    cmp.add_argument("a", type=Path, help="the reference result set")
    cmp.add_argument("b", type=Path, help="the result set compared with it (ratios are B / A)")
    cmp.add_argument(
        "--out", type=Path, help="where compare.md/compare.html go (default: B's directory)"
    )
    cmp.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    compared = report.compare(args.a, args.b, args.out)
    for line in compared.verdict:
        console.print(line, markup=False)
    console.print(f"Comparison: {compared.html_path} (and {compared.markdown_path.name})")
    return 0
