"""debug.csv (`fwbench debug-probe`) as the report's Debug probes section and the terminal's
table: the outcomes side by side, the price of eager execution, and every error message
verbatim."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich import box
from rich.table import Table

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.report.document import Section
from orchestrator.report.document import table as markdown_table
from orchestrator.results import schema
from services.common import frameworks, injection

# Read back as text, never parsed: an outcome "nan" is a word here, not a missing number.
TEXT_COLUMNS = list(
    dict.fromkeys(
        ["framework"]
        + [f.name for f in pb.ProbeResult.DESCRIPTOR.fields if f.type == f.TYPE_STRING]
    )
)
# Outcomes as the report words them.
OUTCOME_TEXT = {
    "ok": "ok",
    "error": "error",
    "silent": "**silent**",
    "nan": "NaN found by fwbench",
    "crash": "crash",
}


def read(path: Path) -> pd.DataFrame:
    """debug.csv as written: text columns as text (by default pandas reads the outcome "nan" as a
    missing value), numbers as numbers (empty or nan: missing)."""
    numbers = {c: ["", "nan"] for c in schema.PROBE_FIELDS if c not in TEXT_COLUMNS}
    frame = pd.read_csv(path, keep_default_na=False, na_values=numbers)
    return schema.upgrade(frame, schema.DEBUG_CSV)


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
