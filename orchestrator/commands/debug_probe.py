"""`fwbench debug-probe`: how each framework reacts to the same mistakes, as a table.

Every framework's service injects the probes of services/common/injection.py into the same small job
(DebugProbe) and streams one ProbeResult per probe x execution mode. Each is a row of debug.csv,
appended as it arrives; its columns are ProbeResult's fields (schema.PROBE_FIELDS: a field added to
the proto is a column without an edit here).
The report's section shows the outcomes side by side, the price of eager execution, and every
error message verbatim.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import pandas as pd
from rich import box
from rich.table import Table

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.inputs import options
from orchestrator.report import Section
from orchestrator.report.document import table as markdown_table
from orchestrator.results import schema
from orchestrator.running.client import TrainerClient
from services.common import frameworks, injection
from services.common import spec as specs

# Read back as text, never parsed: an outcome "nan" is a word here, not a missing number.
TEXT_COLUMNS = list(
    dict.fromkeys(
        ["framework"]
        + [f.name for f in pb.ProbeResult.DESCRIPTOR.fields if f.type == f.TYPE_STRING]
    )
)
# The small job every probe breaks, where the person running it did not say otherwise: a few
# steps show every probe's effect, and the first step's tracing dominates them.
JOB_DEFAULTS = {
    "model": "mobilenet_v2",
    "epochs": 1,
    "batch_size": 8,
    "train_limit": 32,
    "test_limit": 16,
}
# Outcomes as the report words them.
OUTCOME_TEXT = {
    "ok": "ok",
    "error": "error",
    "silent": "**silent**",
    "nan": "NaN found by fwbench",
    "crash": "crash",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """What `fwbench debug-probe` (and a suite's debug_probe key) accepts besides --out and the
    launch options: which frameworks, probes and modes, and the small job's spec."""
    options.add_list_argument(parser, "--frameworks", frameworks.NAMES, list(frameworks.NAMES))
    parser.add_argument(
        "--probes",
        type=options.csv_choice(injection.NAMES, "probe"),
        default=list(injection.NAMES),
        help=f"comma-separated, out of {','.join(injection.NAMES)} (default: all)",
    )
    parser.add_argument(
        "--modes",
        type=options.csv_choice(injection.EXECUTIONS, "mode"),
        default=list(injection.EXECUTIONS),
        help="execution modes, comma-separated: graph (what users run: Keras fit's tf.function, "
        "jax.jit, PyTorch eager) and eager (run_eagerly, jax.disable_jit()) (default: both)",
    )
    parser.add_argument(
        "--model",
        choices=specs.MODELS,
        default=JOB_DEFAULTS["model"],
        help="the small job's model (default: %(default)s)",
    )
    options.add_spec_arguments(parser, {k: v for k, v in JOB_DEFAULTS.items() if k != "model"})


def read(path: Path) -> pd.DataFrame:
    """debug.csv as written: text columns as text (by default pandas reads the outcome "nan" as a
    missing value), numbers as numbers (empty or nan: missing)."""
    numbers = {c: ["", "nan"] for c in schema.PROBE_FIELDS if c not in TEXT_COLUMNS}
    frame = pd.read_csv(path, keep_default_na=False, na_values=numbers)
    return schema.upgrade(frame, schema.DEBUG_CSV)


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


def eager_cost(rows: pd.DataFrame) -> dict[str, float]:
    """Per framework, the unbroken job's median step time eager / graph (where both ran)."""
    cost = {}
    unbroken = rows[rows.probe == injection.NONE]
    for framework, group in unbroken.groupby("framework", sort=False):
        times = dict(zip(group.execution, group.step_time_median_s, strict=True))
        graph, eager = times.get("graph"), times.get("eager")
        if graph and eager and not pd.isna(graph) and not pd.isna(eager):
            cost[framework] = eager / graph
    return cost


def _title(framework: str) -> str:
    return (
        frameworks.FRAMEWORKS[framework].title if framework in frameworks.FRAMEWORKS else framework
    )


def _cell(row) -> str:
    """One framework's outcome of a probe in one mode, in a few words."""
    text = OUTCOME_TEXT.get(row.outcome, row.outcome)
    if row.outcome == "error":
        type_name = str(row.exception_type).rsplit(".", 1)[-1]
        named = "names it" if row.message_names_culprit else "does not name it"
        line = "user line" if row.traceback_has_user_line else "no user line"
        text = f"{type_name}: {named}, {line}, {row.traceback_frames} frames"
    if row.outcome in ("error", "nan"):
        text += f" · after {row.steps_run} step(s), {row.outcome_after_s:.1f} s"
    return text


def findings(rows: pd.DataFrame) -> list[str]:
    """What the table says, a sentence per framework: which mistakes it let pass silently."""
    lines = []
    for framework, group in rows.groupby("framework", sort=False):
        silent = sorted(set(group[group.outcome == "silent"].probe))
        caught = sorted(set(group[group.outcome == "error"].probe))
        lines.append(
            f"{_title(framework)}: silent on {', '.join(silent) or 'nothing'}; raises on "
            f"{', '.join(caught) or 'nothing'}"
        )
    return lines


def table(rows: pd.DataFrame) -> Table:
    """The terminal table: one row per probe x mode, one column per framework."""
    t = Table(title="Debug probes", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    t.add_column("probe", no_wrap=True)
    t.add_column("mode", no_wrap=True)
    names = list(dict.fromkeys(rows.framework))
    for framework in names:
        t.add_column(_title(framework), overflow="fold")
    for (probe_name, execution), group in rows.groupby(["probe", "execution"], sort=False):
        cells = {r.framework: _cell(r) for r in group.itertuples()}
        t.add_row(probe_name, execution, *(cells.get(f, "—").replace("**", "") for f in names))
    return t


def section(rows: pd.DataFrame) -> Section:
    """The report's section, from debug.csv: outcomes side by side, eager's price, messages."""
    names = list(dict.fromkeys(rows.framework))
    outcome_rows = []
    for (probe_name, execution), group in rows.groupby(["probe", "execution"], sort=False):
        cells = {r.framework: _cell(r) for r in group.itertuples()}
        outcome_rows.append([probe_name, execution, *(cells.get(f, "—") for f in names)])
    parts = [
        "The same small job in every framework, broken on purpose, one mistake at a time, each "
        "in a fresh worker process. *silent*: it trained to the end with a finite loss; *NaN "
        "found by fwbench*: the framework said nothing, fwbench checks every step's loss. "
        "*names it*: the message contains the offending layer's name, shape numbers, value or "
        "dtype; *user line*: the traceback reaches the trainer's or model's own code beyond the "
        "call into training.",
        "",
        markdown_table(["probe", "mode", *map(_title, names)], outcome_rows, numeric=set()),
        "",
    ]
    parts += [f"- {line}" for line in findings(rows)]
    parts.append("")
    cost = eager_cost(rows)
    if cost:
        parts += [
            "Price of eager execution (median step of the unbroken job, eager / graph): "
            + "; ".join(f"{_title(f)} {ratio:.2f}×" for f, ratio in cost.items())
            + ".",
            "",
        ]
    described = [f"- {p.name}: {p.description}" for p in injection.PROBES.values()]
    parts += ["Probes:", "", *described, ""]
    errors = rows[rows.outcome.isin(["error", "crash"])]
    for (probe_name, execution), group in errors.groupby(["probe", "execution"], sort=False):
        parts += [f"**{probe_name}** ({execution}) — the messages side by side:", ""]
        for r in group.itertuples():
            where = f" · {r.user_frame}" if isinstance(r.user_frame, str) and r.user_frame else ""
            parts += [
                f"- {_title(r.framework)}: `{r.exception_type}`{where}",
                "",
                # Indented: the message verbatim, as a code block inside the list item.
                *(f"        {line}" for line in str(r.message).splitlines() or [""]),
                "",
            ]
    return Section("Debug probes", "\n".join(parts))
