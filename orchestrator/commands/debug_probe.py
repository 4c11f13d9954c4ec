"""`fwbench debug-probe`: how each framework reacts to the same mistakes, as a table.

Every framework's service injects the probes of services/common/injection.py into the same small job
(DebugProbe) and streams one ProbeResult per probe x execution (graph, eager). Each is a row of
debug.csv, appended as it arrives; its columns are ProbeResult's fields (schema.PROBE_FIELDS: a
field added to the proto is a column without an edit here).
The report's section shows the outcomes side by side, the price of eager execution, and every
error message verbatim.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import grpc
import pandas as pd
from rich.console import Console
from rich.text import Text

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import report
from orchestrator.commands import common
from orchestrator.inputs import options
from orchestrator.report import debugging
from orchestrator.results import schema
from orchestrator.running.client import TrainerClient
from services.common import injection
from services.common import spec as specs


class DebugWriter:
    """debug.csv in out_dir, one row appended (and flushed) per result as it arrives."""

    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / schema.DEBUG_CSV
        self.path.unlink(missing_ok=True)
        self.rows: list[dict] = []

    def add(self, result: pb.ProbeResult) -> dict:
        row = schema.row(result, schema.PROBE_FIELDS)
        pd.DataFrame([row], columns=list(schema.DEBUG_COLUMNS)).to_csv(
            self.path, mode="a", header=not self.rows, index=False
        )
        self.rows.append(row)
        return row


def probe(
    clients: dict[str, TrainerClient],
    spec: pb.TrainSpec,
    probe_names: list[str],
    executions: list[str],
    writer: DebugWriter,
    on_row=lambda row: None,
) -> dict[str, str]:
    """Runs the probes on every framework's service, one framework after another (never two at
    once: their timings would skew each other). Returns the frameworks whose call failed, with
    the gRPC error; their rows received so far are kept."""
    failed = {}
    for framework, client in clients.items():
        try:
            for result in client.debug_probe(spec, probe_names, executions):
                on_row(writer.add(result))
        except grpc.RpcError as e:
            failed[framework] = f"{e.code().name}: {e.details()}"
    return failed


DEBUG_DESCRIPTION = """Injects each probe, one at a time, into the same small training job in every
framework, in graph and eager execution, each in a fresh worker process, and records what the
framework does: error (with its message, whether it names the culprit, the traceback), silent
(trained to the end), or a NaN loss that only fwbench noticed. Writes DIR/debug.csv as results
arrive and DIR/report.md/html. Probes:
""" + "\n".join(f"  {p.name}: {p.description}" for p in injection.PROBES.values())


def debug_spec(args: argparse.Namespace) -> pb.TrainSpec:
    spec = options.for_model(options.build_spec(args), args.model)
    spec.run_id = "debug-probe"
    specs.validate(spec)
    return spec


def handle(args: argparse.Namespace, console: Console) -> int:
    return run_debug_probes(args, common.results_dir(args.out), console)


def run_debug_probes(args: argparse.Namespace, out: Path, console: Console) -> int:
    """The probes of args on every framework; debug.csv and the report in out (a suite's
    results directory keeps its context.json: the training runs' own)."""
    spec = debug_spec(args)
    common.check_device(args, spec)
    addresses = common.service_arguments(args, args.frameworks)
    out.mkdir(parents=True, exist_ok=True)
    writer = DebugWriter(out)

    def show(row: dict) -> None:
        detail = row["exception_type"] or ""
        console.print(
            f"{row['framework']} {row['probe']} ({row['execution']}): {row['outcome']} {detail}",
            markup=False,
        )

    with common.services(args, args.frameworks, addresses, out / "logs", spec) as pool:
        context = common.context(
            spec, pool, frameworks=args.frameworks, probes=args.probes, executions=args.executions
        )
        if not (out / schema.CONTEXT_JSON).exists():
            (out / schema.CONTEXT_JSON).write_text(json.dumps(context, indent=2))
        failed = probe(pool.clients(), spec, args.probes, args.executions, writer, show)
    if writer.rows:
        console.print(debugging.table(debugging.read(writer.path)))
    rendered = report.render(out)
    console.print(
        f"Report: {rendered.html_path} (and {rendered.markdown_path.name}, {schema.DEBUG_CSV})"
    )
    for framework, error in failed.items():
        console.print(Text(f"{framework}: the probes stopped: {error}", style="red"))
    return 1 if failed else 0


def add_arguments(sub) -> None:
    dbg = sub.add_parser(
        "debug-probe",
        help="inject the same mistakes into a small job in every framework and compare what "
        "each does: error, silence or NaN, and how helpful its message is",
        description=DEBUG_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.add_debug_probe_arguments(dbg)
    dbg.add_argument("--out", type=Path, required=True, help="for debug.csv and the report")
    options.add_launch_arguments(dbg)
    dbg.set_defaults(handler=handle)
