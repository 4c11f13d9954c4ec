"""`fwbench report DIR`: rebuild a results directory's CSVs (from events.jsonl) and its report."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from rich.console import Console

from orchestrator import report
from orchestrator.errors import UserError
from orchestrator.results import journal, schema


def add_arguments(sub) -> None:
    rep = sub.add_parser("report", help="rebuild a results directory's CSVs and report")
    rep.add_argument("dir", type=Path, help="a results directory (its events.jsonl)")
    rep.add_argument(
        "--out", type=Path, help="write everything there instead of into DIR (default: DIR)"
    )
    rep.add_argument("--friction", type=Path, metavar="DIR", help="include friction.csv from DIR")
    rep.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    source = args.dir
    if not (source / schema.EVENTS_JSONL).exists() and not (source / schema.RUNS_CSV).exists():
        raise UserError(
            f"{source} has no {schema.EVENTS_JSONL}: is it a results directory of fwbench?"
        )
    out = args.out or source
    if out != source:
        journal.check_free(out, overwrite=False)
        out.mkdir(parents=True, exist_ok=True)
        for name in (
            schema.CONTEXT_JSON,
            schema.PARITY_CSV,
            schema.FRICTION_CSV,
            schema.SUITE_YAML,
        ):
            if (source / name).exists():
                shutil.copyfile(source / name, out / name)
    if (source / schema.EVENTS_JSONL).exists():
        journal.replay(source, out)
    rendered = report.render(out, friction_dir=args.friction)
    for line in rendered.verdict:
        console.print(line, markup=False)
    console.print(f"Report: {rendered.html_path}")
    return 0
