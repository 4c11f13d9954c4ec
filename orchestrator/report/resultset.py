"""A result set read back from its directory: runs.csv, epochs.csv, telemetry.csv (optional),
context.json (optional), floor.csv (optional, benchmarks/floor.py) and, from events.jsonl
(optional), the per-run settings and progress events.

Every CSV is read through schema.upgrade: a column that a result set lacks (an older fwbench's,
CPU-only runs) is there, empty, so that the report shows "not recorded" instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from orchestrator.errors import UserError
from orchestrator.results import journal, schema

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
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    # One row per Progress event (PROGRESS_COLUMNS), from events.jsonl: the runs' windows.
    progress: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROGRESS_COLUMNS))
    # floor.csv beside the runs (benchmarks/floor.py); no rows when absent.
    floor: pd.DataFrame = field(default_factory=pd.DataFrame)
    # The lines of events.jsonl that could not be read, each with why: the report warns of them.
    skipped: list[str] = field(default_factory=list)
    # run_id -> RunEnd.test_correct (the final evaluation image by image, packed), where recorded.
    test_correct: dict[str, bytes] = field(default_factory=dict)

    @property
    def trained_epochs(self) -> pd.DataFrame:
        """The rows of epochs.csv that trained: the baseline (epoch 0, the model evaluated before
        training) left out of every training time, throughput and phase."""
        return self.epochs[self.epochs["epoch"] > 0]

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


def _settings(recorded: journal.Journal) -> dict[str, dict[str, str]]:
    return {
        record.run_id: dict(record.event.run_started.settings)
        for record in recorded.records
        if record.event is not None and record.event.HasField("run_started")
    }


def _test_correct(recorded: journal.Journal) -> dict[str, bytes]:
    return {
        record.run_id: record.event.run_end.test_correct
        for record in recorded.records
        if record.event is not None
        and record.event.HasField("run_end")
        and record.event.run_end.test_correct
    }


def _progress(recorded: journal.Journal) -> pd.DataFrame:
    """One row per Progress event: the runs' windows."""
    rows = [
        {
            "run_id": record.run_id,
            "t_s": record.event.t_s,
            **{column: getattr(record.event.progress, column) for column in PROGRESS_COLUMNS[2:]},
        }
        for record in recorded.records
        if record.event is not None and record.event.HasField("progress")
    ]
    return pd.DataFrame(rows, columns=PROGRESS_COLUMNS)


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
    events = path / schema.EVENTS_JSONL
    recorded = journal.read_journal(events) if events.exists() else None
    return ResultSet(
        path=path,
        runs=runs,
        epochs=read_table(path, schema.EPOCHS_CSV),
        telemetry=read_table(path, schema.TELEMETRY_CSV),
        context=context,
        settings=_settings(recorded) if recorded else {},
        progress=_progress(recorded) if recorded else pd.DataFrame(columns=PROGRESS_COLUMNS),
        floor=read_table(path, schema.FLOOR_CSV),
        skipped=recorded.skipped(schema.EVENTS_JSONL) if recorded else [],
        test_correct=_test_correct(recorded) if recorded else {},
    )
