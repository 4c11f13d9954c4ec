"""The result schema: the files of a result set, and the columns of each CSV. The one place that
names them: results.py writes them, and every reader (the report, compare, sweep, the floor,
deployment and debugging sections, the CLI, the tests) takes names and columns from here.

The columns of runs.csv, epochs.csv, telemetry.csv, deploy.csv and debug.csv come from the
contract (proto/fwbench/v1/trainer.proto): every scalar field of TrainSpec, RunStarted and RunEnd
is a runs.csv column, of EpochEnd an epochs.csv column, of TelemetrySample a telemetry.csv
column, of DeployResult a deploy.csv column, of ProbeResult a debug.csv column, under the field's
own name (units are in the names). A field added to the proto is a column without an edit
anywhere. The one exception: a few entries of RunStarted's settings map, the numerics a run
resolved its precision to, are runs.csv columns too (SETTINGS_COLUMNS). docs/results.md says what
each column means.

A result set written by an older fwbench lacks the columns added since: `upgrade` reads it as one
written today.

Importing this needs neither pandas nor a framework: benchmarks/floor.py, in the PyTorch
environment, names floor.csv and its columns from here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from google.protobuf.descriptor import Descriptor

from fwbench.v1 import trainer_pb2 as pb
from services.common import numerics

if TYPE_CHECKING:
    import pandas as pd

# ---- the files of a result set (docs/results.md) ----------------------------------------------

EVENTS_JSONL = "events.jsonl"  # the journal: every other file of a run can be rebuilt from it
RUNS_CSV = "runs.csv"
EPOCHS_CSV = "epochs.csv"
TELEMETRY_CSV = "telemetry.csv"
DEPLOY_CSV = "deploy.csv"
CONTEXT_JSON = "context.json"
PARITY_CSV = "parity.csv"
DEBUG_CSV = "debug.csv"
FLOOR_CSV = "floor.csv"
FRICTION_CSV = "friction.csv"
SUITE_YAML = "suite.yaml"  # the suite file a result set came from, kept beside it
# The reports, each a .md and an .html of this stem: of a result set, of two, of a sweep.
REPORT = "report"
COMPARE = "compare"
SWEEP = "sweep"
# Every file of a result set but the reports written from it: what `fwbench report DIR --out
# DIR2` rebuilds or carries into DIR2, so that DIR2's report is DIR's.
FILES = (
    EVENTS_JSONL,
    RUNS_CSV,
    EPOCHS_CSV,
    TELEMETRY_CSV,
    DEPLOY_CSV,
    CONTEXT_JSON,
    PARITY_CSV,
    DEBUG_CSV,
    FLOOR_CSV,
    FRICTION_CSV,
    SUITE_YAML,
)

# ---- columns -----------------------------------------------------------------------------------

# What names a run in every file; `repeat` counts from 0, as epochs do.
RUN_KEYS = ("run_id", "framework", "model", "repeat")
# How a run ended: ok, or why not.
OUTCOME_COLUMNS = ("status", "error")
# Fields that are not measurements or knobs of one run: already in RUN_KEYS or OUTCOME_COLUMNS
# (RunEnd.status becomes `status`), or maps; and TrainSpec.debug, which DebugProbe alone sets.
_SKIPPED = {"run_id", "framework", "model.name", "settings", "status", "debug"}


def scalar_fields(
    descriptor: Descriptor,
    prefix: str = "",
    nested_prefix: bool = False,
    skipped: frozenset[str] | set[str] = _SKIPPED,
) -> Iterator[tuple[str, str]]:
    """(column, dotted field path) of every scalar field, nested messages flattened, but for the
    paths in `skipped`. A column is the field's name, except that a nested `name` takes its
    message's (optimizer.name -> optimizer); with nested_prefix, a nested field's column starts
    with its message's name (divergence.epoch -> divergence_epoch)."""
    for field in descriptor.fields:
        path = prefix + field.name
        # A bytes field is no CSV cell (RunEnd.test_correct: one bit per test image); it stays
        # in events.jsonl, where the report reads it.
        if path in skipped or field.is_repeated or field.type == field.TYPE_BYTES:
            continue
        if field.message_type is not None:
            yield from scalar_fields(field.message_type, path + ".", nested_prefix, skipped)
        elif nested_prefix and prefix:
            yield path.replace(".", "_"), path
        else:
            column = prefix.rstrip(".").rsplit(".", 1)[-1] if field.name == "name" else field.name
            yield column, path


# column -> field path, per message that fills a CSV.
SPEC_FIELDS = dict(scalar_fields(pb.TrainSpec.DESCRIPTOR))
# RunStarted's num_classes is the spec's, as the service resolved it: one column for both.
STARTED_FIELDS = {c: p for c, p in scalar_fields(pb.RunStarted.DESCRIPTOR) if c not in SPEC_FIELDS}
END_FIELDS = dict(scalar_fields(pb.RunEnd.DESCRIPTOR, nested_prefix=True))
EPOCH_FIELDS = dict(scalar_fields(pb.EpochEnd.DESCRIPTOR))
TELEMETRY_FIELDS = dict(scalar_fields(pb.TelemetrySample.DESCRIPTOR))
# A serving format's own status and error: deploy.csv has no run outcome to clash with.
DEPLOY_FIELDS = dict(scalar_fields(pb.DeployResult.DESCRIPTOR, skipped=frozenset()))
# debug.csv has no run keys: the probe's framework is its first column.
PROBE_FIELDS = {"framework": "framework"} | dict(scalar_fields(pb.ProbeResult.DESCRIPTOR))
# Read-friendly columns the writer computes from the spec (results.spec_columns).
DERIVED_SPEC_COLUMNS = ("model_definitions", "dataset")
# Entries of RunStarted.settings that are runs.csv columns too: the numerics the service resolved
# the spec's precision to (services/common/numerics.py), beside `precision`, which asked for them.
SETTINGS_COLUMNS = tuple(numerics.TF32_KEYS)

# Every CSV's columns, in the order written.
RUN_COLUMNS = (
    *RUN_KEYS,
    *OUTCOME_COLUMNS,
    *SPEC_FIELDS,
    *DERIVED_SPEC_COLUMNS,
    *STARTED_FIELDS,
    *SETTINGS_COLUMNS,
    *END_FIELDS,
)
EPOCH_COLUMNS = (*RUN_KEYS, *EPOCH_FIELDS)
TELEMETRY_COLUMNS = (*RUN_KEYS, *TELEMETRY_FIELDS)
DEPLOY_COLUMNS = (*RUN_KEYS, *DEPLOY_FIELDS)
DEBUG_COLUMNS = tuple(PROBE_FIELDS)
# benchmarks/floor.py's, not the contract's: one row per framework and model.
FLOOR_COLUMNS = (
    "framework",
    "model",
    "batch_size",
    "precision",
    "device_name",
    "step_ms_median",
    "step_ms_p90",
    "method",
)
# By file name. parity.csv and friction.csv are not here: the one module that writes each also
# reads it (parity.frame, friction.table.frame).
COLUMNS = {
    RUNS_CSV: RUN_COLUMNS,
    EPOCHS_CSV: EPOCH_COLUMNS,
    TELEMETRY_CSV: TELEMETRY_COLUMNS,
    DEPLOY_CSV: DEPLOY_COLUMNS,
    DEBUG_CSV: DEBUG_COLUMNS,
    FLOOR_CSV: FLOOR_COLUMNS,
}
# Columns of text whose words pandas would otherwise read as something else ("true" as a bool).
TEXT_COLUMNS = {RUNS_CSV: SETTINGS_COLUMNS}
# The knobs of a run's job as runs.csv records them: what `fwbench compare` names where two sets
# differ, what the sets of a sweep must share, what the report's provenance lists.
KNOB_COLUMNS = (*SPEC_FIELDS, *DERIVED_SPEC_COLUMNS)
# What a column holds where an older fwbench left it out; any other reads empty (not recorded).
# mode: before it was recorded every run trained the default way, and the report groups runs by
# mode. Empty cells too: a journal from then replays with an empty mode.
BEFORE_RECORDED = {
    # Every run before --gpus trained on one device.
    RUNS_CSV: {"mode": "default", "gpus": 1},
    # benchmarks/floor.py measured only PyTorch before it measured every framework.
    FLOOR_CSV: {"framework": "pytorch"},
}


def row(message, fields: dict[str, str]) -> dict:
    """The columns `fields` names, with their values in message; None for an absent optional
    field (never a false 0)."""
    return {column: _value(message, path) for column, path in fields.items()}


def _value(message, path: str):
    *parents, name = path.split(".")
    for part in parents:
        message = getattr(message, part)
    if message.DESCRIPTOR.fields_by_name[name].has_presence and not message.HasField(name):
        return None
    return getattr(message, name)


def upgrade(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """`frame`, read from the CSV named `table` (e.g. RUNS_CSV) of any fwbench version, with
    every column that fwbench writes today: a missing one holds its BEFORE_RECORDED value, or is
    empty. Columns it does not know (a newer fwbench's) are kept."""
    if table == EPOCHS_CSV and "epoch" in frame and "before_training" not in frame:
        # Written before the baseline (epoch 0) was: its training epochs counted from 0.
        frame = frame.assign(epoch=frame["epoch"] + 1, before_training=False)
    missing = {column: float("nan") for column in COLUMNS[table] if column not in frame}
    frame = frame.assign(**missing)
    for column, value in BEFORE_RECORDED.get(table, {}).items():
        # As objects first: a column with no value at all reads as floats, which hold no text.
        frame[column] = frame[column].astype(object).fillna(value)
    return frame
