"""Results as data, written as they arrive, so that a crash loses nothing already measured.

DIR/events.jsonl   the journal: every run's spec, every event, every run's outcome; append-only,
                   flushed per line. Everything else can be rebuilt from it (`rebuild`).
DIR/runs.csv       one row per run (rewritten, atomically, whenever a run ends)
DIR/epochs.csv     one row per run x epoch (appended)
DIR/telemetry.csv  one row per device/host sample (appended)
DIR/deploy.csv     one row per run x serving format, when the spec deploys (appended)
DIR/context.json   the command, the spec and every service's Describe

The names and the columns are orchestrator/results/schema.py's, derived from the contract.

A rebuild (`fwbench report`, `--resume`) reads the whole journal and checks every line first: a
journal it cannot rebuild from is refused, naming its lines, before any file changes; the files
are then written beside the old ones and renamed over them, one by one, so that a rebuild cut
short leaves every old file whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import tempfile
from pathlib import Path

import grpc
import pandas as pd
from google.protobuf import json_format

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.errors import UserError
from orchestrator.results import schema

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
        # Runs whose service evaluated the model before training (epoch 0, the baseline).
        self._baselined: set[str] = set()

    @contextlib.contextmanager
    def _writing(self, path: Path):
        """A ResultsWriteError naming path for any OSError while writing it."""
        try:
            yield
        except OSError as e:
            self._failed = True
            raise ResultsWriteError(path, e) from e

    @classmethod
    def resume(cls, out_dir: Path, recorded: Journal) -> ResultsWriter:
        """The result set in out_dir, kept to the finished runs (ok or diverged: those a rerun
        would only repeat) of its journal, `recorded` (read_journal), ready for the rest; its
        `rows` are those runs."""
        rows = rebuild(recorded, out_dir, keep=FINISHED)
        writer = cls.__new__(cls)
        writer._open(out_dir)
        writer._runs = rows
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
            end = event.epoch_end
            if end.before_training:
                self._baselined.add(run["run_id"])
            elif run["run_id"] not in self._baselined:
                # From a service (or a journal) older than the baseline, which numbered its
                # training epochs from 0: epochs.csv numbers them from 1 whatever sent them.
                end = pb.EpochEnd()
                end.CopyFrom(event.epoch_end)
                end.epoch += 1
            self._append(schema.EPOCHS_CSV, [keys | schema.row(end, schema.EPOCH_FIELDS)])
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

    def _replay(self, records: list[Record], keep: tuple[str, ...] | None) -> None:
        """Writes the journal's records again, as they were written while the runs went, for the
        runs whose status (status_of) is in keep (all when None). A run with no outcome line
        ends as its RunEnd says, or, without one (fwbench stopped during it), `interrupted`."""
        status = status_of(records)
        runs: dict[str, tuple[dict, pb.TrainSpec, RunOutcome]] = {}
        for record in records:
            if keep is not None and status[record.run_id] not in keep:
                continue
            if record.spec is not None:
                runs[record.run_id] = (record.run, record.spec, RunOutcome())
                self.run_begins(record.run, record.spec)
            elif record.outcome is not None:
                run, spec, outcome = runs.pop(record.run_id)
                outcome.error = record.outcome["error"]
                self.run_finished(run | {"status": record.outcome["status"]}, spec, outcome)
            else:
                run, _, outcome = runs[record.run_id]
                kind = record.event.WhichOneof("event")
                if kind == "run_started":
                    outcome.started = record.event.run_started
                elif kind == "run_end":
                    outcome.end = record.event.run_end
                self.event(run, record.event)
        for run, spec, outcome in runs.values():
            if outcome.end is None:
                outcome.error = "fwbench stopped during this run"
                run = run | {"status": "interrupted"}
            # Else fwbench stopped between the run's RunEnd and its outcome line: it finished.
            self.run_finished(run, spec, outcome)

    def close(self) -> None:
        try:
            self._journal.close()
        except OSError:
            # After a failed write, closing flushes the same cut-short line again and fails the
            # same way; that error is already on its way up, and the journal's reader skips the
            # cut line.
            if not self._failed:
                raise


class JournalError(UserError):
    """A journal that cannot be rebuilt from as it is."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One line of the journal, checked: a run's spec (the run begins), one of its events, or
    its outcome (the run ends); exactly one of the three is set."""

    line: int
    # run_id and framework; with the spec, every key of schema.RUN_KEYS.
    run: dict
    spec: pb.TrainSpec | None = None
    event: pb.TrainEvent | None = None
    # status and error, as run_finished wrote them.
    outcome: dict | None = None

    @property
    def run_id(self) -> str:
        return self.run["run_id"]


CUT_SHORT = "cut short (fwbench stopped while writing it)"


@dataclasses.dataclass
class Journal:
    """events.jsonl as read_journal read it: the records of its whole lines, and what is wrong
    with every other line."""

    path: Path
    records: list[Record]
    # line number -> why that line is not a record.
    malformed: dict[int, str]
    # The last line's number when it is not a record: what a crash (kill -9, a full disk) leaves
    # while a line is written, and nothing else lost; None when the last line is whole.
    cut_short: int | None = None

    @property
    def has_specs(self) -> bool:
        """Whether it holds the spec of any run: a journal of an older fwbench holds events
        alone, and no CSV can be rebuilt from it."""
        return any(record.spec is not None for record in self.records)

    @property
    def older(self) -> bool:
        """Whether an older fwbench wrote it (or it is empty): every line whole, none a run's
        spec. Its CSVs are the record; with a malformed line no one can tell (it may have been
        a spec), and check says so."""
        return not self.malformed and not self.has_specs

    def skipped(self, name: str) -> list[str]:
        """A line per line that was not read, naming the journal `name`."""
        why = self.malformed | ({self.cut_short: CUT_SHORT} if self.cut_short else {})
        return [f"{name} line {line}: {text}: skipped" for line, text in sorted(why.items())]

    def check(self) -> None:
        """A JournalError naming every line that a rebuild could not replay, or would replay
        wrongly; nothing when the journal can be rebuilt from (a last line cut short is only
        skipped)."""
        problems = dict(self.malformed)
        if self.has_specs:
            problems |= _outside_their_runs(self.records)
        elif self.records and not problems:
            raise JournalError(
                f"{self.path} holds no run's spec (an older fwbench wrote it), so no run can be "
                "rebuilt from it (`fwbench report` reports its CSVs as they are); nothing was "
                "changed"
            )
        if problems:
            shown = [f"line {line}: {why}" for line, why in sorted(problems.items())]
            shown = shown[:10] + ([f"and {len(shown) - 10} more"] if shown[10:] else [])
            raise JournalError(
                f"{self.path} cannot be rebuilt from: {'; '.join(shown)}. Repair or delete those "
                "lines (events.jsonl holds one JSON object per line), then run the command "
                "again; nothing was changed"
            )


def _outside_their_runs(records: list[Record]) -> dict[int, str]:
    """Line number -> why, for every event or outcome of a run that no line before it begins,
    or that an outcome before it already ended: the writer never writes one, and a replay would
    have no run to give it to."""
    begun: set[str] = set()
    ended: dict[str, int] = {}
    problems = {}
    for record in records:
        if record.spec is not None:
            begun.add(record.run_id)
            ended.pop(record.run_id, None)
            continue
        what = "the outcome" if record.outcome is not None else "an event"
        if record.run_id in ended:
            problems[record.line] = (
                f"{what} of run {record.run_id}, which line {ended[record.run_id]} already ended"
            )
        elif record.run_id not in begun:
            problems[record.line] = f"{what} of run {record.run_id}, which no line before it begins"
        elif record.outcome is not None:
            begun.discard(record.run_id)
            ended[record.run_id] = record.line
    return problems


def status_of(records: list[Record]) -> dict[str, str]:
    """Each run's status: its outcome line's; without one, its RunEnd's (fwbench was stopped
    after the run finished, before it wrote the outcome); without that, `interrupted`."""
    status: dict[str, str] = {}
    for record in records:
        if record.spec is not None:
            status[record.run_id] = "interrupted"  # until its RunEnd or its outcome
        elif record.outcome is not None:
            status[record.run_id] = record.outcome["status"]
        elif record.event.HasField("run_end"):
            status[record.run_id] = record.event.run_end.status or "ok"
    return status


class _Malformed(Exception):
    """Why a line of the journal is not a record."""


def read_journal(path: Path) -> Journal:
    """events.jsonl, every line checked: the records of the whole lines, and for every other
    line its number and what is wrong with it; never an exception for what a line holds."""
    records: list[Record] = []
    malformed: dict[int, str] = {}
    with open(path, "rb") as journal:
        numbered = [(number, raw) for number, raw in enumerate(journal, 1) if raw.strip()]
    for number, raw in numbered:
        try:
            records.append(_record(number, raw))
        except _Malformed as e:
            malformed[number] = str(e)
    # The writer ends every line with its newline: a last line without one was cut short, even
    # where what was written parses (`"epoch": 1` of `"epoch": 12`).
    cut_short = numbered[-1][0] if numbered and not numbered[-1][1].endswith(b"\n") else None
    if cut_short:
        records = [record for record in records if record.line != cut_short]
        malformed.pop(cut_short, None)
    return Journal(path, records, malformed, cut_short)


def _record(number: int, raw: bytes) -> Record:
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise _Malformed(f"not UTF-8 text (byte {e.start + 1})") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Malformed(f"not JSON ({e.msg}, column {e.colno})") from e
    if not isinstance(data, dict):
        raise _Malformed(f"not a JSON object but {_json_type(data)}")
    run = {key: _name(data, key) for key in ("run_id", "framework")}
    if "spec" in data:
        run["model"] = _name(data, "model")
        repeat = data.get("repeat")
        if type(repeat) is not int or repeat < 0:
            raise _Malformed(f"repeat is {json.dumps(repeat)}, not a count")
        run["repeat"] = repeat
        return Record(number, run, spec=_message(data["spec"], pb.TrainSpec(), "spec"))
    if "outcome" in data:
        outcome = data["outcome"]
        if not isinstance(outcome, dict):
            raise _Malformed(f"the outcome is {_json_type(outcome)}, not an object")
        for key, kind in (("status", "a word"), ("error", "a text")):
            if not isinstance(outcome.get(key), str) or (key == "status" and not outcome[key]):
                raise _Malformed(f"outcome {key} is {json.dumps(outcome.get(key))}, not {kind}")
        return Record(number, run, outcome={"status": outcome["status"], "error": outcome["error"]})
    fields = {key: value for key, value in data.items() if key not in run}
    kind = next((key for key in fields if key != "t_s"), "event")
    return Record(number, run, event=_message(fields, pb.TrainEvent(), kind))


def _name(data: dict, key: str) -> str:
    value = data.get(key)
    if key not in data:
        raise _Malformed(f"no {key}")
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{key} is {json.dumps(value)}, not a name")
    return value


def _message(value, message, what: str):
    """`value` parsed as `message`; `what` (spec, epoch_end...) names it in a complaint."""
    if not isinstance(value, dict):
        raise _Malformed(f"the {what} is {_json_type(value)}, not an object")
    try:
        return json_format.ParseDict(value, message)
    except json_format.ParseError as e:
        # Its first line says what; the next ones list every field of the message.
        raise _Malformed(f"{what}: {str(e).splitlines()[0].rstrip('.')}") from e


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


def rebuild(recorded: Journal, out_dir: Path, keep: tuple[str, ...] | None = None) -> list[dict]:
    """Rebuilds events.jsonl, runs.csv, epochs.csv, telemetry.csv and deploy.csv in out_dir
    (which may hold the journal itself) from `recorded`, for the runs whose status is in keep
    (all when None); returns the runs.csv rows. Refuses a journal that Journal.check refuses
    before any file changes; writes the files in a folder of out_dir, then renames each over
    its old one (the journal last): a rebuild that fails or is killed leaves every file whole,
    old or rebuilt."""
    recorded.check()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(
            prefix=".rebuild-", dir=out_dir, ignore_cleanup_errors=True
        ) as folder:
            work = Path(folder)
            writer = ResultsWriter.__new__(ResultsWriter)
            writer._open(work)
            try:
                writer._replay(recorded.records, keep)
            finally:
                writer.close()
            for name in sorted(JOURNALED_FILES, key=lambda name: name == schema.EVENTS_JSONL):
                if (work / name).exists():
                    os.replace(work / name, out_dir / name)
                else:  # no run of those kept wrote it
                    (out_dir / name).unlink(missing_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot rebuild the result set in {out_dir}: {e.strerror or e}; every file there "
            "is whole (as it was, or rebuilt): free space there or make it writable, then run "
            "the command again"
        ) from e
    return writer.rows
