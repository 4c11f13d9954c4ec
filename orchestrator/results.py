"""Results as data, written as they arrive, so that a crash loses nothing already measured.

DIR/events.jsonl   every event of every run, append-only and flushed
DIR/runs.csv       one row per run (rewritten whenever a run ends)
DIR/epochs.csv     one row per run x epoch (appended)
DIR/telemetry.csv  one row per device/host sample (appended)
DIR/context.json   the command, the spec and every service's Describe
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from google.protobuf import json_format

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.parity import LIBRARY_LABEL

TELEMETRY_FIELDS = (
    "t_s",
    "gpu_util_pct",
    "mem_util_pct",
    "mem_used_bytes",
    "power_w",
    "energy_j",
    "temp_c",
    "sm_clock_mhz",
    "sm_active_pct",
    "rss_bytes",
    "cpu_pct",
)
RUN_END_FIELDS = (
    "train_time_s",
    "total_time_s",
    "images_per_s",
    "time_to_first_step_s",
    "first_step_s",
    "step_time_median_s",
    "step_time_p90_s",
    "peak_gpu_mem_bytes",
    "peak_framework_mem_bytes",
    "peak_framework_reserved_bytes",
    "mean_gpu_util_pct",
    "energy_j",
    "energy_method",
)


def spec_columns(spec: pb.TrainSpec) -> dict:
    """A spec's knobs as flat runs.csv columns: every setting that changes speed or accuracy."""
    return {
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "seed": spec.seed,
        "device": spec.device,
        "precision": spec.precision,
        "compile": spec.compile,
        "cudnn_benchmark": spec.cudnn_benchmark,
        "architecture": spec.model.architecture,
        "model_definitions": LIBRARY_LABEL
        if spec.model.architecture == "library"
        else "canonical (identical in every framework)",
        "init": spec.model.init,
        "dataset": spec.data.source if spec.data.source == "synthetic" else spec.data.data_dir,
        "augment": spec.data.augment,
        "optimizer": spec.optimizer.name,
        "learning_rate": spec.optimizer.learning_rate,
        "momentum": spec.optimizer.momentum,
        "nesterov": spec.optimizer.nesterov,
        "weight_decay": spec.optimizer.weight_decay,
        "lr_schedule": spec.optimizer.lr_schedule,
        "label_smoothing": spec.optimizer.label_smoothing,
    }


def _present(message, fields) -> dict:
    """Fields of a message, with absent optional fields as NaN/empty rather than a false 0."""
    out = {}
    for name in fields:
        descriptor = message.DESCRIPTOR.fields_by_name[name]
        if descriptor.has_presence and not message.HasField(name):
            out[name] = None
        else:
            out[name] = getattr(message, name)
    return out


RESULT_FILES = (
    "events.jsonl",
    "runs.csv",
    "epochs.csv",
    "telemetry.csv",
    "context.json",
    "parity.csv",
    "report.md",
    "report.html",
)


class ResultsExist(Exception):
    pass


class ResultsWriter:
    def __init__(self, out_dir: Path, overwrite: bool = False):
        """Refuses a directory that already holds results, so two experiments never mix in one
        set of files; with overwrite, the old result files are removed first."""
        self.dir = out_dir
        existing = [out_dir / name for name in RESULT_FILES if (out_dir / name).exists()]
        if existing and not overwrite:
            raise ResultsExist(
                f"{out_dir} already holds results ({', '.join(p.name for p in existing)}): "
                "choose another --out, or pass --overwrite to replace them"
            )
        for path in existing:
            path.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._events = open(self.dir / "events.jsonl", "a")  # noqa: SIM115 - open for the session
        self._runs: list[dict] = []

    def write_context(self, context: dict) -> None:
        (self.dir / "context.json").write_text(json.dumps(context, indent=2, default=str) + "\n")

    def event(self, run: dict, event: pb.TrainEvent) -> None:
        """Records one event of `run` (its identifying columns: run_id, framework, model, ...)."""
        record = {"run_id": run["run_id"], "framework": run["framework"]}
        record |= json_format.MessageToDict(event, preserving_proto_field_name=True)
        self._events.write(json.dumps(record) + "\n")
        self._events.flush()
        kind = event.WhichOneof("event")
        if kind == "epoch_end":
            e = event.epoch_end
            row = {k: run[k] for k in ("run_id", "framework", "model", "repeat")}
            row |= json_format.MessageToDict(
                e, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            row.setdefault("energy_j", None)
            self._append("epochs.csv", [row])
        elif kind == "telemetry":
            rows = [
                {"run_id": run["run_id"], "framework": run["framework"], "model": run["model"]}
                | _present(s, TELEMETRY_FIELDS)
                for s in event.telemetry.samples
            ]
            self._append("telemetry.csv", rows)

    def _append(self, name: str, rows: list[dict]) -> None:
        path = self.dir / name
        frame = pd.DataFrame(rows)
        if path.exists():
            # Keep the file's column order; a column it lacks would shift every later row.
            columns = pd.read_csv(path, nrows=0).columns
            frame = frame.reindex(columns=columns)
        frame.to_csv(path, mode="a", header=not path.exists(), index=False)

    def run_finished(
        self,
        run: dict,
        spec: pb.TrainSpec,
        started: pb.RunStarted | None,
        end: pb.RunEnd | None,
        error: str = "",
    ) -> dict:
        """Adds the run's row to runs.csv (status ok, or failed with the error)."""
        row = {
            "run_id": run["run_id"],
            "framework": run["framework"],
            "model": run["model"],
            "repeat": run["repeat"],
            "status": "ok" if end is not None and not error else "failed",
            "error": error,
        } | spec_columns(spec)
        row["train_samples"] = started.train_samples if started else None
        row["test_samples"] = started.test_samples if started else None
        row["device_name"] = started.device_name if started else None
        row["gpu"] = started.gpu if started else None
        row["framework_version"] = started.framework_version if started else None
        row["import_s"] = started.import_s if started else None
        row["data_load_s"] = started.data_load_s if started else None
        row["build_s"] = started.build_s if started else None
        row["final_test_accuracy"] = end.final_test_accuracy if end else None
        row |= _present(end, RUN_END_FIELDS) if end else dict.fromkeys(RUN_END_FIELDS)
        self._runs.append(row)
        pd.DataFrame(self._runs).to_csv(self.dir / "runs.csv", index=False)
        return row

    def close(self) -> None:
        self._events.close()
