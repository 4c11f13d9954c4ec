"""The hardware floor (floor.csv, written by benchmarks/floor.py into a results directory) against
the runs beside it: the report's section "tuned is 1.2× the floor"."""

from __future__ import annotations

import pandas as pd

from orchestrator.report.analysis import name
from orchestrator.report.document import Section


def table(floor: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model × framework × mode with a floor measured on the same device, at the same
    batch size and precision: the median of the finished runs' steady-state step medians, the
    floor's median, and their ratio. `runs` is runs.csv as schema.upgrade reads it: every run
    has a mode."""
    ok = runs[(runs["status"] == "ok") & runs["step_time_median_s"].notna()]
    rows = []
    for (model, framework, mode, batch, precision, device), group in ok.groupby(
        ["model", "framework", "mode", "batch_size", "precision", "device_name"], sort=False
    ):
        match = floor[
            (floor["model"] == model)
            & (floor["batch_size"] == batch)
            & (floor["precision"] == precision)
            & (floor["device_name"] == device)
        ]
        if match.empty:
            continue
        step_ms = group["step_time_median_s"].median() * 1000
        floor_ms = float(match["step_ms_median"].iloc[0])
        rows.append(
            {
                "model": model,
                "framework": name(framework),
                "mode": mode,
                "runs": len(group),
                "step_ms": step_ms,
                "floor_ms": floor_ms,
                "times_floor": step_ms / floor_ms,
            }
        )
    return pd.DataFrame(rows)


def section(floor: pd.DataFrame, runs: pd.DataFrame) -> Section:
    measured = table(floor, runs)
    devices = ", ".join(sorted(set(floor["device_name"])))
    # The method as floor.py wrote it: on a CPU it says the numbers are a check, not a floor.
    methods = "; ".join(sorted(set(floor["method"])))
    intro = (
        "The floor: each model's whole training step with no input pipeline or host work "
        f"between steps, PyTorch's (benchmarks/floor.py, {devices}: {methods}). × floor is the "
        "runs' steady-state step median over it: 1.00 would be the hardware's own speed for "
        "this step."
    )
    if measured.empty:
        return Section(
            "Against the hardware floor",
            intro + "\n\nNo finished run matches the floor's device, batch size and precision "
            f"({', '.join(sorted(set(floor['model'])))}): nothing to compare.",
        )
    lines = [
        "| model | framework | mode | runs | step, median | floor | × floor |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.model} | {r.framework} | {r.mode} | {r.runs} | {r.step_ms:.2f} ms | "
        f"{r.floor_ms:.2f} ms | {r.times_floor:.2f}× |"
        for r in measured.itertuples()
    ]
    return Section("Against the hardware floor", intro + "\n\n" + "\n".join(lines))
