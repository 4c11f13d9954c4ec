"""A result set read back from its directory: runs.csv, epochs.csv, telemetry.csv (optional),
context.json (optional), floor.csv (optional, benchmarks/floor.py) and, from events.jsonl
(optional), the per-run settings and progress events.

Every CSV is read through schema.upgrade: a column that a result set lacks (an older fwbench's,
CPU-only runs) is there, empty, so that the report shows "not recorded" instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.errors import UserError
from orchestrator.results import schema

# The fields of a Progress event the report reads, with the run and the event's time.
PROGRESS_COLUMNS = ("run_id", "t_s", "epoch", "step", "steps_per_epoch", "images_per_s")


class ResultSetError(UserError):
    """A directory that is not a result set fwbench can report on."""


@dataclass
class ResultSet:
    path: Path
    runs: pd.DataFrame
    epochs: pd.DataFrame
    telemetry: pd.DataFrame
    context: dict
    # run_id -> RunStarted.settings, from events.jsonl.
    settings: dict[str, dict[str, str]]
    # One row per Progress event (PROGRESS_COLUMNS), from events.jsonl: the runs' windows.
    progress: pd.DataFrame
    # floor.csv beside the runs (benchmarks/floor.py); no rows when absent.
    floor: pd.DataFrame

    @property
    def frameworks(self) -> list[str]:
        """In the order the experiment listed them (the first is the reference of ratios)."""
        listed = [f for f in self.context.get("frameworks") or [] if f in set(self.runs.framework)]
        return listed + [f for f in self.runs.framework.unique() if f not in listed]

    @property
    def groups(self) -> list[tuple[str, pd.DataFrame]]:
        """(label, runs) per model and mode: modes are compared separately, never pooled."""
        return [
            (f"{model} ({mode})", group)
            for (model, mode), group in self.runs.groupby(
                ["model", "mode"], sort=False, dropna=False
            )
        ]


def read_table(directory: Path, table: str) -> pd.DataFrame:
    """The CSV named `table` (e.g. schema.RUNS_CSV) in directory, upgraded to today's columns;
    absent or empty, it reads as no rows."""
    path = directory / table
    text = dict.fromkeys(schema.TEXT_COLUMNS.get(table, ()), str)
    frame = (
        pd.read_csv(path, dtype=text) if path.exists() and path.stat().st_size else pd.DataFrame()
    )
    return schema.upgrade(frame, table)


def _journal(events: Path) -> tuple[dict[str, dict[str, str]], pd.DataFrame]:
    """Each run's settings (RunStarted) and its Progress events, from events.jsonl."""
    settings: dict[str, dict[str, str]] = {}
    progress = []
    if not events.exists():
        return settings, pd.DataFrame(columns=PROGRESS_COLUMNS)
    with events.open() as lines:
        for line in lines:
            # Only these lines matter; skipping the rest (telemetry, the bulk) unparsed keeps big
            # files quick.
            if '"run_started"' not in line and '"progress"' not in line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a last line cut short by a crash (journal.read_journal skips it too)
            if "run_started" in record:
                started = record["run_started"]
                run_id = record.get("run_id", started.get("run_id", ""))
                settings[run_id] = started.get("settings", {})
            elif "progress" in record:
                # The journal's JSON leaves out fields at their default (epoch 0, t_s 0).
                event = record["progress"]
                progress.append(
                    {
                        "run_id": record["run_id"],
                        "t_s": float(record.get("t_s", 0.0)),
                        **{column: event.get(column, 0) for column in PROGRESS_COLUMNS[2:]},
                    }
                )
    return settings, pd.DataFrame(progress, columns=PROGRESS_COLUMNS)


def load(path: Path, require_runs: bool = True) -> ResultSet:
    """The result set in `path`; without require_runs, a directory with no training runs (e.g.
    only install-friction results, given to the report as sections) reads as an empty set."""
    path = Path(path)
    if not path.is_dir():
        raise ResultSetError(f"{path} is not a directory: give the directory of a result set")
    if require_runs and not (path / schema.RUNS_CSV).exists():
        raise ResultSetError(
            f"{path} holds no {schema.RUNS_CSV}: give the directory that `fwbench run --out` wrote"
        )
    runs = read_table(path, schema.RUNS_CSV)
    if runs.empty and require_runs:
        raise ResultSetError(
            f"{path}/{schema.RUNS_CSV} has no runs: no run was recorded in this directory"
        )
    runs["error"] = runs["error"].astype(object).fillna("").astype(str)
    runs["status"] = runs["status"].fillna("unknown").astype(str)
    context_path = path / schema.CONTEXT_JSON
    context = json.loads(context_path.read_text()) if context_path.exists() else {}
    settings, progress = _journal(path / schema.EVENTS_JSONL)
    return ResultSet(
        path=path,
        runs=runs,
        epochs=read_table(path, schema.EPOCHS_CSV),
        telemetry=read_table(path, schema.TELEMETRY_CSV),
        context=context,
        settings=settings,
        progress=progress,
        floor=read_table(path, schema.FLOOR_CSV),
    )
