"""The hardware floor (floor.csv, written by benchmarks/floor.py into a results directory) against
the runs beside it: the report's section "tuned is 1.2× the floor", each framework against its
own floor with the regime that follows (regime.py), and the frameworks against each other at the
floor and in each mode."""

from __future__ import annotations

import itertools

import pandas as pd

from orchestrator.report import regime
from orchestrator.report.analysis import name
from orchestrator.report.document import Section
from orchestrator.report.regime import JOB
from services.common import frameworks

MODES = ("tuned", "default")


def run_steps(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model × framework × mode × batch size × precision × device of the finished
    runs (analysis.per_run's): how many, the median of their steady-state step medians (ms) and
    of their steady-state GPU busy, and whether they used a GPU."""
    ok = runs[(runs["status"] == "ok") & runs["step_time_median_s"].notna()]
    ok = ok.assign(used_gpu=ok["gpu"].fillna("none").astype(str) != "none")
    groups = ok.groupby([*JOB, "framework", "mode"], sort=False)
    steps = groups.agg(
        runs=("step_time_median_s", "size"),
        step_s=("step_time_median_s", "median"),
        busy_pct=("steady_gpu_util_pct", "median"),
        gpu=("used_gpu", "any"),
    ).reset_index()
    return steps.assign(step_ms=steps["step_s"] * 1000)


def table(floor: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model × framework × mode with that framework's floor measured on the same
    device, at the same batch size and precision: the runs' step median, the floor's median,
    and their ratio."""
    floors = floor[[*JOB, "framework", "step_ms_median"]]
    matched = run_steps(runs).merge(floors, on=[*JOB, "framework"])
    times_floor = matched["step_ms"] / matched["step_ms_median"]
    return pd.DataFrame(
        {
            "model": matched["model"],
            "framework": matched["framework"].map(name),
            "mode": matched["mode"],
            "runs": matched["runs"],
            "step_ms": matched["step_ms"],
            "floor_ms": matched["step_ms_median"],
            "times_floor": times_floor,
            "busy_pct": matched["busy_pct"],
            "regime": [
                regime.judge(ratio, None if pd.isna(busy) else busy, gpu)
                for ratio, busy, gpu in zip(
                    times_floor, matched["busy_pct"], matched["gpu"], strict=True
                )
            ],
        }
    )


def between(floor: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model and pair of frameworks that both have its floor (same device, batch
    size and precision): the second's step time over the first's at the floor and in the runs of
    each mode (None where a mode has no finished run of either)."""
    steps = run_steps(runs).set_index([*JOB, "framework", "mode"])["step_ms"]
    order = {f: i for i, f in enumerate(frameworks.NAMES)}
    rows = []
    for job, group in floor.groupby(JOB, sort=False):
        floor_ms = dict(zip(group["framework"], group["step_ms_median"], strict=True))
        for first, second in itertools.combinations(sorted(floor_ms, key=order.get), 2):
            row = {"model": job[0], "pair": f"{name(second)} / {name(first)}"}
            row["floor"] = floor_ms[second] / floor_ms[first]
            for mode in MODES:
                a, b = (steps.get((*job, f, mode)) for f in (first, second))
                row[mode] = b / a if a is not None and b is not None else None
            rows.append(row)
    return pd.DataFrame(rows)


def _times(ratio: float | None) -> str:
    return "–" if ratio is None or pd.isna(ratio) else f"{ratio:.2f}×"


def section(floor: pd.DataFrame, runs: pd.DataFrame) -> Section:
    measured = table(floor, runs)
    devices = ", ".join(sorted(set(floor["device_name"])))
    # The methods as floor.py wrote them: on a CPU they say the numbers are a check, not a floor.
    methods = "; ".join(
        f"{name(f)}: {'; '.join(sorted(set(group['method'])))}"
        for f, group in floor.groupby("framework", sort=False)
    )
    intro = (
        "The floor: each framework's fastest run of each model's training step, with no input "
        f"pipeline or host work between steps (benchmarks/floor.py, {devices}; {methods}). "
        "× floor is the runs' steady-state step median over their own framework's floor: 1.00 "
        "would be the fastest this framework runs this step here. GPU busy is in steady state "
        "(see each model's Phases); the regime follows from both (Method)."
    )
    if measured.empty:
        return Section(
            "Against the hardware floor",
            intro + "\n\nNo finished run matches a floor's framework, device, batch size and "
            f"precision ({', '.join(sorted(set(floor['model'])))}): nothing to compare.",
        )
    lines = [
        "| model | framework | mode | runs | step, median | floor | × floor | GPU busy, steady "
        "| regime |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r.model} | {r.framework} | {r.mode} | {r.runs} | {r.step_ms:.2f} ms | "
        f"{r.floor_ms:.2f} ms | {r.times_floor:.2f}× | "
        f"{'–' if pd.isna(r.busy_pct) else f'{r.busy_pct:.0f} %'} | {r.regime.kind} |"
        for r in measured.itertuples()
    ]
    pairs = between(floor, runs)
    if not pairs.empty:
        lines += [
            "",
            "Between frameworks: one framework's step time over another's for the same model on "
            "the same device, at the floor and in the runs of each mode (medians of the finished "
            "runs' step medians). Where tuned is near the floor's ratio, the tuned code reaches "
            "what each framework can do; default's ratio adds the cost of the step as users "
            "write it first.",
            "",
            "| model | step time | floor | tuned | default |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r.model} | {r.pair} | {_times(r.floor)} | {_times(r.tuned)} | "
            f"{_times(r.default)} |"
            for r in pairs.itertuples()
        ]
    return Section("Against the hardware floor", intro + "\n\n" + "\n".join(lines))
