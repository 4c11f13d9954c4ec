"""What limits a framework's step: the host (the step well above its floor, the GPU waiting) or
the device (the step near its floor, the GPU busy). Judged from the step over the framework's own
floor (floor.csv, benchmarks/floor.py) and the GPU busy in steady state (phases.py), never from a
whole-run average, which start-up, the first step and evaluation pull down; and said unknown
where neither was measured. One judgement for the verdict, the warnings and the floor section."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# What a floor and a run are matched on: the same step on the same device.
JOB = ["model", "batch_size", "precision", "device_name"]
# A step within this multiple of its floor runs at what the framework's fastest code does here
# (the README's tuned runs: 0.97-1.02×); a default eager step that waits on the host is 2-4×.
# Beyond it, the step is host-bound unless the GPU stayed busy: tuned JAX's MobileNetV2 at 1.21×
# with the GPU idle 22 % of steady state waits on the host, whatever its kernels could do.
NEAR_FLOOR = 1.10
# NVML busy (share of time a kernel ran) in steady state: at or above this the GPU always has
# work, below BUSY_HOST_PCT it mostly waits for the host to launch or feed it.
BUSY_DEVICE_PCT = 90.0
BUSY_HOST_PCT = 60.0

HOST, DEVICE, UNKNOWN = "host-bound", "device-bound", "regime unknown"


@dataclass(frozen=True)
class Regime:
    kind: str  # HOST, DEVICE or UNKNOWN
    evidence: str

    def __str__(self) -> str:
        separator = ": " if self.kind == UNKNOWN else " ("
        return f"{self.kind}{separator}{self.evidence}" + ("" if self.kind == UNKNOWN else ")")


def floor_ms(floor: pd.DataFrame, runs: pd.DataFrame) -> float | None:
    """The floor (ms) of the step that `runs` (one framework's, one job's) took: floor.csv's row
    of the same framework, model, batch size, precision and device; None where there is none."""
    if floor.empty or runs.empty:
        return None
    job = runs[[*JOB, "framework"]].drop_duplicates()
    matched = job.merge(floor[[*JOB, "framework", "step_ms_median"]], on=[*JOB, "framework"])
    return float(matched["step_ms_median"].median()) if len(job) == 1 and len(matched) else None


def judge(times_floor: float | None, busy_pct: float | None, gpu: bool) -> Regime:
    """The regime of a step `times_floor` × its floor (None: no floor measured) whose GPU was
    busy `busy_pct` % in steady state (None: not measured); `gpu`: the runs used one."""
    busy = f"GPU busy {busy_pct:.0f} % in steady state" if busy_pct is not None else None
    if times_floor is not None:
        step = f"step {times_floor:.2f}× its floor"
        if times_floor <= NEAR_FLOOR:
            return Regime(DEVICE, ", ".join(filter(None, (step, busy))))
        if busy_pct is not None and busy_pct >= BUSY_DEVICE_PCT:
            return Regime(
                DEVICE,
                f"{busy}, yet the {step}: its kernels, not the host, are slower than the floor's",
            )
        return Regime(HOST, ", ".join(filter(None, (step, busy))))
    if busy_pct is None:
        missing = "no steady-state GPU busy recorded" if gpu else "no GPU"
        return Regime(UNKNOWN, f"no floor measured and {missing}")
    if busy_pct >= BUSY_DEVICE_PCT:
        return Regime(DEVICE, f"{busy}; no floor measured")
    if busy_pct < BUSY_HOST_PCT:
        return Regime(HOST, f"{busy}; no floor measured")
    return Regime(UNKNOWN, f"{busy}, neither idle nor saturated, and no floor measured")


def advice(mode: str) -> str:
    """What to try about a host-bound step, fitting the mode it ran in."""
    if mode == "tuned":
        return (
            "tuned already takes off the host what the framework can; a larger --batch-size "
            "spreads the per-step host work over more images."
        )
    return (
        "`--mode tuned` (each framework's documented way to take the host out of the step) or a "
        "larger --batch-size shows what the device itself can do."
    )
