"""report.md and report.html, rendered from the same frames as the CSV files.

The report knows the result files of `fwbench run`; anything else (model parity, install
friction) comes in as a Section from the caller.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from orchestrator.stats import summarise


@dataclasses.dataclass(frozen=True)
class Section:
    """A part of the report that the caller provides: a title and its body in markdown."""

    title: str
    markdown: str


@dataclasses.dataclass(frozen=True)
class Report:
    markdown_path: Path
    html_path: Path
    # The lines a console shows after a run.
    verdict: list[str]


# (column, label, scale): what the side-by-side table shows, when the column has values.
METRICS = (
    ("final_test_accuracy", "test accuracy (final epoch)", 1),
    ("train_time_s", "training time, s", 1),
    ("total_time_s", "total time (worker start to end), s", 1),
    ("images_per_s", "training throughput, images/s", 1),
    ("time_to_first_step_s", "time to first step, s", 1),
    ("import_s", "framework import, s", 1),
    ("build_s", "model build, s", 1),
    ("first_step_s", "first step (incl. tracing/compilation), s", 1),
    ("step_time_median_s", "steady-state step, median, ms", 1000),
    ("step_time_p90_s", "steady-state step, p90, ms", 1000),
    ("between_epoch_overhead_s", "between-epoch overhead per epoch, s", 1),
    ("mean_gpu_util_pct", "GPU utilisation (NVML: time a kernel ran), %", 1),
    ("peak_gpu_mem_bytes", "peak GPU memory, device (NVML), GiB", 1 / 2**30),
    ("peak_framework_mem_bytes", "peak GPU memory, framework allocator, GiB", 1 / 2**30),
    ("energy_j", "GPU energy, kJ", 1 / 1000),
)


def side_by_side(runs: pd.DataFrame, epochs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per model: one row per metric, one column per framework (mean ± spread over repeats)."""
    ok = runs[runs["status"] == "ok"].copy()
    if not epochs.empty and "between_epoch_overhead_s" in epochs:
        overhead = epochs.groupby("run_id")["between_epoch_overhead_s"].mean()
        ok["between_epoch_overhead_s"] = ok["run_id"].map(overhead)
    tables = {}
    for model, group in ok.groupby("model", sort=False):
        rows = {}
        for column, label, scale in METRICS:
            if column not in group or group[column].isna().all():
                continue
            rows[label] = {
                framework: summarise(values.dropna() * scale)
                for framework, values in group.groupby("framework", sort=False)[column]
            }
        tables[model] = pd.DataFrame(rows).T
    return tables


def per_epoch(epochs: pd.DataFrame) -> pd.DataFrame:
    if epochs.empty:
        return epochs
    return epochs.pivot_table(
        index=["model", "epoch"],
        columns="framework",
        values=["test_accuracy", "epoch_time_s"],
        aggfunc="mean",
    ).round(4)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def render(
    results_dir: Path, out_dir: Path | None = None, sections: Sequence[Section] = ()
) -> Report:
    """Writes report.md and report.html into out_dir (default results_dir) from results_dir's
    files, with the caller's sections after the results."""
    out_dir = out_dir or results_dir
    runs = _read(results_dir / "runs.csv")
    epochs = _read(results_dir / "epochs.csv")
    context_path = results_dir / "context.json"
    context = json.loads(context_path.read_text()) if context_path.exists() else {}
    parts = ["# fwbench report", ""]
    if context.get("command"):
        parts += [f"Command: `{context['command']}`", ""]
    for framework, info in context.get("services", {}).items():
        parts.append(
            f"- **{framework}** {info.get('framework_version', '?')} · Python "
            f"{info.get('python_version', '?')} · CUDA {info.get('cuda_version') or 'none'} · "
            f"devices: {', '.join(info.get('devices', []))}"
        )
    parts.append("")
    if not runs.empty and (runs["architecture"] == "library").any():
        parts += [
            f"**{runs['model_definitions'].iloc[0]}**: each framework's own model library as-is, "
            "so results compare models as well as frameworks (differences under Model parity).",
            "",
        ]
    if runs.empty and not sections:
        parts.append("No run finished.")
    elif not runs.empty:
        for model, table in side_by_side(runs, epochs).items():
            parts += [f"## {model}", "", table.to_markdown(), ""]
        table = per_epoch(epochs)
        if not table.empty:
            table.columns = [f"{metric} · {framework}" for metric, framework in table.columns]
            parts += ["## Per epoch", "", table.reset_index().to_markdown(index=False), ""]
        failed = runs[runs["status"] != "ok"]
        if not failed.empty:
            parts += ["## Failed runs", ""]
            parts += [f"- `{r.run_id}`: {r.error}" for r in failed.itertuples()]
            parts.append("")
    for section in sections:
        parts += [f"## {section.title}", "", section.markdown, ""]
    parts += [
        "Notes: GPU utilisation is NVML's, the share of time at least one kernel ran, not SM "
        "occupancy. Times are wall-clock; GPU timings synchronise the device before reading "
        "clocks. Figures are mean ± standard deviation over repeats (with 5 or more repeats, "
        "the fastest and slowest are dropped first, as MLPerf does).",
        "",
    ]
    markdown = "\n".join(parts)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / "report.md"
    md_path.write_text(markdown)
    html_path = out_dir / "report.html"
    html_path.write_text(_html(markdown))
    verdict = [f"{r.run_id}: {r.status}" for r in runs.itertuples()] if not runs.empty else []
    return Report(md_path, html_path, verdict)


def _html(markdown: str) -> str:
    # The markdown tables are simple pipes; a <pre> keeps the page dependency-free and exact.
    escaped = markdown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!doctype html><meta charset='utf-8'><title>fwbench report</title>"
        "<style>body{font:14px/1.4 system-ui;margin:2em}pre{font:13px ui-monospace,monospace}"
        f"</style><pre>{escaped}</pre>\n"
    )
