"""telemetry.csv's rows of runs over several devices (--gpus N), as the report's "Devices"
section: what each device of a data-parallel run did, so that an idle or overfull device shows.
Runs on one device have no such section: their telemetry is in the per-model evidence."""

from __future__ import annotations

import pandas as pd

from orchestrator.report.document import Section

# (column of telemetry.csv, how it is summarised over the run's samples of a device, heading)
SUMMARIES = (
    ("gpu_util_pct", "mean", "GPU busy, mean %"),
    ("mem_used_bytes", "max", "GPU memory, peak GB"),
    ("power_w", "mean", "power, mean W"),
    ("cpu_pct", "mean", "CPU of its process, mean %"),
    ("rss_bytes", "max", "memory of its process, peak GB"),
)


def section(runs: pd.DataFrame, telemetry: pd.DataFrame) -> Section | None:
    """Per run over several devices, one row per device; None when every run had one device."""
    several = runs[runs["gpus"].fillna(1).astype(int) > 1]
    if several.empty or telemetry.empty:
        return None
    rows = telemetry[telemetry["run_id"].isin(several["run_id"])].copy()
    rows["device_index"] = rows["device_index"].fillna(0).astype(int)
    summary = rows.groupby(["run_id", "framework", "model", "device_index"], sort=False).agg(
        samples=("t_s", "size"), **{column: (column, how) for column, how, _ in SUMMARIES}
    )
    for column in ("mem_used_bytes", "rss_bytes"):
        summary[column] = summary[column] / 1e9
    shown = summary.reset_index().rename(
        columns={"device_index": "device", **{c: heading for c, _, heading in SUMMARIES}}
    )
    text = shown.to_markdown(index=False, floatfmt=".1f", missingval="–")
    return Section(
        "Devices",
        "Each device of the runs trained on several (`gpus`), over the run's telemetry samples "
        "(`telemetry.csv`, `device_index`). GPU columns are that GPU's; the CPU and memory of "
        "its process are each rank's own in PyTorch, and the one process's, repeated for every "
        "device, in TensorFlow and JAX. Empty GPU columns: no GPU (CPU devices).\n\n" + text,
    )
