"""A result set read back from its directory: runs.csv, epochs.csv, telemetry.csv (optional),
context.json (optional) and the per-run settings in events.jsonl (optional).

Columns that a result set lacks (older or newer fwbench versions, CPU-only runs) are added empty,
so that the report shows "not recorded" instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from orchestrator.errors import UserError

# Every column the report reads; a set that lacks one gets it empty (shown as not recorded).
RUN_COLUMNS = (
    "run_id",
    "framework",
    "model",
    "repeat",
    "status",
    "error",
    "epochs",
    "batch_size",
    "seed",
    "device",
    "precision",
    "architecture",
    "model_definitions",
    "dataset",
    "train_samples",
    "test_samples",
    "device_name",
    "gpu",
    "framework_version",
    "import_s",
    "data_load_s",
    "build_s",
    "final_test_accuracy",
    "train_time_s",
    "total_time_s",
    "time_to_first_step_s",
    "first_step_s",
    "step_time_median_s",
    "step_time_p90_s",
    "peak_gpu_mem_bytes",
    "peak_framework_mem_bytes",
    "mean_gpu_util_pct",
    "energy_j",
)
EPOCH_COLUMNS = (
    "run_id",
    "framework",
    "model",
    "repeat",
    "epoch",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "epoch_time_s",
    "between_epoch_overhead_s",
    "energy_j",
)
TELEMETRY_COLUMNS = (
    "run_id",
    "framework",
    "model",
    "t_s",
    "gpu_util_pct",
    "mem_used_bytes",
    "power_w",
    "sm_active_pct",
    "rss_bytes",
    "cpu_pct",
)


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

    @property
    def frameworks(self) -> list[str]:
        """In the order the experiment listed them (the first is the reference of ratios)."""
        listed = [f for f in self.context.get("frameworks") or [] if f in set(self.runs.framework)]
        return listed + [f for f in self.runs.framework.unique() if f not in listed]

    @property
    def groups(self) -> list[tuple[str, pd.DataFrame]]:
        """(label, runs) per model, and per mode too when the set has a mode column: modes are
        compared separately, never pooled."""
        by = ["model", "mode"] if self.runs["mode"].notna().any() else ["model"]
        out = []
        for key, group in self.runs.groupby(by, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            label = key[0] if len(key) == 1 or pd.isna(key[1]) else f"{key[0]} ({key[1]})"
            out.append((str(label), group))
        return out


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
    for column in (*columns, "mode"):
        if column not in frame:
            frame[column] = pd.Series(dtype="object" if column in ("mode", "error") else "float")
    return frame


def _settings(events: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    if not events.exists():
        return out
    with events.open() as lines:
        for line in lines:
            # Only run_started lines matter; skipping the rest unparsed keeps big files quick.
            if '"run_started"' not in line:
                continue
            record = json.loads(line)
            started = record.get("run_started") or {}
            out[record.get("run_id", started.get("run_id", ""))] = started.get("settings", {})
    return out


def load(path: Path, require_runs: bool = True) -> ResultSet:
    """The result set in `path`; without require_runs, a directory with no training runs (e.g.
    only install-friction results, given to the report as sections) reads as an empty set."""
    path = Path(path)
    if not path.is_dir():
        raise ResultSetError(f"{path} is not a directory: give the directory of a result set")
    if require_runs and not (path / "runs.csv").exists():
        raise ResultSetError(
            f"{path} holds no runs.csv: give the directory that `fwbench run --out` wrote"
        )
    runs = _read_csv(path / "runs.csv", RUN_COLUMNS)
    if runs.empty and require_runs:
        raise ResultSetError(f"{path}/runs.csv has no runs: no run was recorded in this directory")
    runs["error"] = runs["error"].astype(object).fillna("").astype(str)
    runs["status"] = runs["status"].fillna("unknown").astype(str)
    context_path = path / "context.json"
    context = json.loads(context_path.read_text()) if context_path.exists() else {}
    return ResultSet(
        path=path,
        runs=runs,
        epochs=_read_csv(path / "epochs.csv", EPOCH_COLUMNS),
        telemetry=_read_csv(path / "telemetry.csv", TELEMETRY_COLUMNS),
        context=context,
        settings=_settings(path / "events.jsonl"),
    )
