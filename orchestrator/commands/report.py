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
    events = source / schema.EVENTS_JSONL
    if not events.exists() and not (source / schema.RUNS_CSV).exists():
        raise UserError(
            f"{source} has no {schema.EVENTS_JSONL}: is it a results directory of fwbench?"
        )
    out = args.out or source
    elsewhere = out.resolve() != source.resolve()
    recorded = journal.read_journal(events) if events.exists() else None
    # An older fwbench's journal holds no spec to rebuild from: its CSVs are the record.
    rebuilds = recorded is not None and not recorded.older
    # Everything is checked before anything is written.
    if rebuilds:
        recorded.check()
    if elsewhere:
        check_empty(out)
    for line in recorded.skipped(str(events)) if recorded else []:
        console.print(line, markup=False)
    if recorded and not rebuilds:
        holds = "no run's spec (an older fwbench wrote it)" if recorded.records else "no run"
        console.print(
            f"{events} holds {holds}: {schema.RUNS_CSV} and the other CSVs are kept as they "
            "are, not rebuilt",
            markup=False,
        )
    if elsewhere:
        out.mkdir(parents=True, exist_ok=True)
        carried = [n for n in schema.FILES if not (rebuilds and n in journal.JOURNALED_FILES)]
        for name in carried:
            if (source / name).exists():
                shutil.copyfile(source / name, out / name)
    if rebuilds:
        journal.rebuild(recorded, out)
    rendered = report.render(out, friction_dir=args.friction)
    for line in rendered.verdict:
        console.print(line, markup=False)
    console.print(f"Report: {rendered.html_path}")
    return 0


def check_empty(out: Path) -> None:
    """Refuses an --out that holds any file of a result set: two sets never mix in one."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a directory")
    names = (*schema.FILES, f"{schema.REPORT}.md", f"{schema.REPORT}.html")
    existing = [name for name in names if (out / name).exists()]
    if existing:
        raise UserError(
            f"{out} already holds results ({', '.join(existing)}): give --out a new or empty "
            "directory"
        )
