"""Results as data, written as they arrive, so that a crash loses nothing already measured.

DIR/events.jsonl   the journal: every run's spec, every event, every run's outcome; append-only,
                   flushed per line. Everything else can be rebuilt from it (`replay`).
DIR/runs.csv       one row per run (rewritten, atomically, whenever a run ends)
DIR/epochs.csv     one row per run x epoch (appended)
DIR/telemetry.csv  one row per device/host sample (appended)
DIR/deploy.csv     one row per run x serving format, when the spec deploys (appended)
DIR/context.json   the command, the spec and every service's Describe

The names and the columns are orchestrator/results/schema.py's, derived from the contract.
"""

from __future__ import annotations

import grpc

import dataclasses

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from google.protobuf import json_format

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.results import schema
from orchestrator.errors import UserError

LIBRARY_LABEL = "library models — not identical"

# What the journal rebuilds, and the statuses of runs that --resume keeps.
JOURNALED_FILES = (
    schema.EVENTS_JSONL,
    schema.RUNS_CSV,
    schema.EPOCHS_CSV,
    schema.TELEMETRY_CSV,
    schema.DEPLOY_CSV,
)
FINISHED = ("ok", "diverged")
RESULT_FILES = (
    *JOURNALED_FILES,
    schema.CONTEXT_JSON,
    schema.PARITY_CSV,
    f"{schema.REPORT}.md",
    f"{schema.REPORT}.html",
)


@dataclasses.dataclass
class RunOutcome:
    """What one Train call came to: the events that frame the run, and how it ended."""

    started: pb.RunStarted | None = None
    end: pb.RunEnd | None = None
    # Empty when the run ended with RunEnd; else why not, as "STATUS_CODE: details".
    error: str = ""
    # The gRPC status of a failed call; None when the stream ended normally.
    code: grpc.StatusCode | None = None
    # Ctrl-C cut the run short (it was cancelled on the service).
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.end is not None and not self.error


def spec_columns(spec: pb.TrainSpec) -> dict:
    """A spec's knobs as flat runs.csv columns: every setting that changes speed or accuracy."""
    row = schema.row(spec, schema.SPEC_FIELDS)
    row["model_definitions"] = (
        LIBRARY_LABEL
        if spec.model.architecture == "library"
        else "canonical (identical in every framework)"
    )
    row["dataset"] = spec.data.source if spec.data.source == "synthetic" else spec.data.data_dir
    return row


def run_row(run: dict, spec: pb.TrainSpec, outcome: RunOutcome) -> dict:
    """The runs.csv row of a finished run."""
    row = {key: run[key] for key in schema.RUN_KEYS}
    # ok, diverged (the service's word in RunEnd), failed, or what the caller says (cancelled...).
    row["status"] = run.get("status") or (outcome.end.status or "ok" if outcome.ok else "failed")
    row["error"] = outcome.error
    row |= spec_columns(spec)
    if outcome.started and outcome.started.num_classes:
        row["num_classes"] = outcome.started.num_classes  # the dataset's, when the spec had none
    if outcome.started:
        row |= schema.row(outcome.started, schema.STARTED_FIELDS)
        row |= {key: outcome.started.settings.get(key) for key in schema.SETTINGS_COLUMNS}
    row |= schema.row(outcome.end, schema.END_FIELDS) if outcome.end else {}
    return {column: row.get(column) for column in schema.RUN_COLUMNS}


class ResultsExist(UserError):
    pass


class ResultsWriteError(OSError):
    """A result file could not be written (a full disk, a quota, a folder taken away): names the
    file and keeps what was written before it, which `--resume` builds on."""

    def __init__(self, path: Path, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path = path

    def __str__(self) -> str:
        if self.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            remedy = "free space there (or ask for a larger quota)"
        else:
            remedy = "make it writable again"
        return (
            f"cannot write {self.path}: {self.strerror}. The runs were stopped; everything "
            f"written before is kept in {self.path.parent} (events.jsonl holds every finished "
            f"run): {remedy}, then `fwbench run --resume {self.path.parent}` runs the rest"
        )


def check_free(out_dir: Path, overwrite: bool) -> list[Path]:
    """The result files already in out_dir; a ResultsExist unless overwrite allows replacing
    them. Called before any service starts, and again by the writer."""
    existing = [out_dir / name for name in RESULT_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise ResultsExist(
            f"{out_dir} already holds results ({', '.join(p.name for p in existing)}): "
            "choose another --out, pass --overwrite to replace them, or --resume to finish "
            "the runs they lack"
        )
    return existing


class ResultsWriter:
    """Writes one result set; `ResultsWriter(dir)` starts one, `ResultsWriter.resume(dir)` goes on
    with the one in dir."""

    def __init__(self, out_dir: Path, overwrite: bool = False):
        """Refuses a directory that already holds results, so two experiments never mix in one
        set of files; with overwrite, the old result files are removed first."""
        for path in check_free(out_dir, overwrite):
            path.unlink()
        self._open(out_dir)

    def _open(self, out_dir: Path) -> None:
        self.dir = out_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._journal = open(self.dir / schema.EVENTS_JSONL, "a")  # noqa: SIM115 - open for the session
        self._runs: list[dict] = []
        self._failed = False

    @contextlib.contextmanager
    def _writing(self, path: Path):
        """A ResultsWriteError naming path for any OSError while writing it."""
        try:
            yield
        except OSError as e:
            self._failed = True
            raise ResultsWriteError(path, e) from e

    @classmethod
    def resume(cls, out_dir: Path) -> ResultsWriter:
        """The result set in out_dir, kept to its finished runs (ok or diverged: those a rerun
        would only repeat), ready for the rest; its `rows` are those runs."""
        journal = out_dir / schema.EVENTS_JSONL
        if not journal.exists():
            raise UserError(
                f"--resume {out_dir}: no {schema.EVENTS_JSONL} there, so nothing to resume"
            )
        records = list(read_journal(journal))
        for name in JOURNALED_FILES:
            (out_dir / name).unlink(missing_ok=True)
        writer = cls.__new__(cls)
        writer._open(out_dir)
        writer._replay(records, keep=FINISHED)
        return writer

    def write_context(self, context: dict) -> None:
        path = self.dir / schema.CONTEXT_JSON
        with self._writing(path):
            path.write_text(json.dumps(context, indent=2, default=str) + "\n")

    def _record(self, record: dict) -> None:
        with self._writing(self.dir / schema.EVENTS_JSONL):
            self._journal.write(json.dumps(record) + "\n")
            self._journal.flush()

    def run_begins(self, run: dict, spec: pb.TrainSpec) -> None:
        """Journals the run's identity and spec, so that its events can be replayed alone."""
        self._record(
            {key: run[key] for key in schema.RUN_KEYS}
            | {"spec": json_format.MessageToDict(spec, preserving_proto_field_name=True)}
        )

    def event(self, run: dict, event: pb.TrainEvent) -> None:
        """Records one event of `run` (its run keys)."""
        self._record(
            {"run_id": run["run_id"], "framework": run["framework"]}
            | json_format.MessageToDict(event, preserving_proto_field_name=True)
        )
        keys = {key: run[key] for key in schema.RUN_KEYS}
        kind = event.WhichOneof("event")
        if kind == "epoch_end":
            self._append(
                schema.EPOCHS_CSV, [keys | schema.row(event.epoch_end, schema.EPOCH_FIELDS)]
            )
        elif kind == "telemetry":
            rows = [keys | schema.row(s, schema.TELEMETRY_FIELDS) for s in event.telemetry.samples]
            self._append(schema.TELEMETRY_CSV, rows)
        elif kind == "deployment":
            rows = [keys | schema.row(r, schema.DEPLOY_FIELDS) for r in event.deployment.results]
            self._append(schema.DEPLOY_CSV, rows)

    def _append(self, name: str, rows: list[dict]) -> None:
        path = self.dir / name
        with self._writing(path):
            frame = pd.DataFrame(rows, columns=list(schema.COLUMNS[name]))
            frame.to_csv(path, mode="a", header=not path.exists(), index=False)

    def run_finished(self, run: dict, spec: pb.TrainSpec, outcome: RunOutcome) -> dict:
        """Adds the run's row to runs.csv; `run["status"]`, when set, overrides ok/failed."""
        row = run_row(run, spec, outcome)
        self._record(
            {"run_id": run["run_id"], "framework": run["framework"]}
            | {"outcome": {"status": row["status"], "error": row["error"]}}
        )
        self._runs.append(row)
        # Written beside and renamed over: a kill mid-write never leaves half a runs.csv.
        path = self.dir / schema.RUNS_CSV
        partial = path.with_name(path.name + ".partial")
        with self._writing(path):
            try:
                frame = pd.DataFrame(self._runs, columns=list(schema.RUN_COLUMNS))
                frame.to_csv(partial, index=False)
                os.replace(partial, path)
            except OSError:
                partial.unlink(missing_ok=True)  # the last whole runs.csv stays
                raise
        return row

    @property
    def rows(self) -> list[dict]:
        """The runs.csv rows written so far."""
        return list(self._runs)

    def _replay(self, records: list[dict], keep: tuple[str, ...] | None) -> None:
        """Writes the journal's records again, as they were written while the runs went, for the
        runs whose status is in keep (all when None). A run with no outcome (fwbench stopped
        during it) is `interrupted`."""
        status = {r["run_id"]: r["outcome"]["status"] for r in records if "outcome" in r}
        runs: dict[str, tuple[dict, pb.TrainSpec, RunOutcome]] = {}
        for record in records:
            key = record["run_id"]
            if keep is not None and status.get(key, "interrupted") not in keep:
                continue
            if "spec" in record:
                spec = json_format.ParseDict(record["spec"], pb.TrainSpec())
                runs[key] = ({k: record[k] for k in schema.RUN_KEYS}, spec, RunOutcome())
                self.run_begins(*runs[key][:2])
            elif "outcome" in record:
                run, spec, outcome = runs.pop(key)
                outcome.error = record["outcome"]["error"]
                self.run_finished(run | {"status": record["outcome"]["status"]}, spec, outcome)
            elif key in runs:
                run, _, outcome = runs[key]
                event = json_format.ParseDict(
                    {k: v for k, v in record.items() if k not in ("run_id", "framework")},
                    pb.TrainEvent(),
                )
                kind = event.WhichOneof("event")
                if kind == "run_started":
                    outcome.started = event.run_started
                elif kind == "run_end":
                    outcome.end = event.run_end
                self.event(run, event)
        for run, spec, outcome in runs.values():
            outcome.error = "fwbench stopped during this run"
            self.run_finished(run | {"status": "interrupted"}, spec, outcome)

    def close(self) -> None:
        try:
            self._journal.close()
        except OSError:
            # After a failed write, closing flushes the same cut-short line again and fails the
            # same way; that error is already on its way up, and the journal's reader skips the
            # cut line.
            if not self._failed:
                raise


def read_journal(path: Path) -> Iterator[dict]:
    """The records of events.jsonl; a last line cut short by a crash is skipped."""
    with open(path) as journal:
        for line in journal:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def replay(results_dir: Path, out_dir: Path) -> list[dict]:
    """Rebuilds events.jsonl, runs.csv, epochs.csv and telemetry.csv in out_dir (which may be
    results_dir) from results_dir's journal; returns the runs.csv rows."""
    records = list(read_journal(results_dir / schema.EVENTS_JSONL))
    for name in JOURNALED_FILES:
        (out_dir / name).unlink(missing_ok=True)
    writer = ResultsWriter.__new__(ResultsWriter)
    writer._open(out_dir)
    try:
        writer._replay(records, keep=None)
    finally:
        writer.close()
    return writer.rows
