"""Where each run's time, GPU busy, power and energy went, phase by phase.

A run's training windows are its Progress events (events.jsonl): each ends at the event's time
and lasts its steps × batch / images_per_s. services/common/steady.py says which windows are
steady state; the first call is the first step (tracing or compilation included), the other
windows before steady state are warm-up, and steady windows slower than steady.STALL_FACTOR ×
the run's median step are stalled. Evaluation is each epoch's eval_time_s, ending at the epoch's
end (epochs.csv); between epochs is the rest of the time from the first step to the last epoch's
end. A telemetry sample belongs to the phase it was taken in, by its time: NVML reports the
period before a sample, so a sample at a phase's end is the phase's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.report.resultset import ResultSet
from services.common import steady

FIRST, WARMUP, STEADY, STALLED, EVALUATION, BETWEEN = (
    "first step",
    "warm-up",
    "steady",
    "stalled",
    "evaluation",
    "between epochs",
)
# In the order of the report's table.
PHASES = (STEADY, STALLED, FIRST, WARMUP, EVALUATION, BETWEEN)
LABELS = {
    STEADY: "steady state",
    STALLED: f"stalled windows (step > {steady.STALL_FACTOR:g}× the median)",
    FIRST: "first step (tracing or compilation included)",
    WARMUP: f"warm-up (epoch 1; a one-epoch run's first {steady.WARMUP_STEPS} steps)",
    EVALUATION: "evaluation",
    BETWEEN: "between epochs",
}
# Phases made of training windows: they have images and step times.
WINDOW_PHASES = (FIRST, WARMUP, STEADY, STALLED)
WINDOW_COLUMNS = (
    "run_id",
    "epoch",
    "first_step",
    "last_step",
    "steps",
    "images",
    "start_s",
    "end_s",
    "duration_s",
    "step_s",
    "phase",
)
FIGURE_COLUMNS = (
    "run_id",
    "phase",
    "duration_s",
    "images",
    "windows",
    "samples",
    "gpu_util_pct",
    "power_w",
    "energy_j",
    "energy_per_1000_images_j",
    "cpu_pct",
)


@dataclass
class Phases:
    # One row per training window (WINDOW_COLUMNS) of every run with Progress events.
    windows: pd.DataFrame
    # One row per run and phase (FIGURE_COLUMNS): what went where.
    figures: pd.DataFrame

    def of_runs(self, run_ids) -> Phases:
        run_ids = set(run_ids)
        return Phases(
            self.windows[self.windows.run_id.isin(run_ids)],
            self.figures[self.figures.run_id.isin(run_ids)],
        )


def epoch_ends_s(epochs: pd.DataFrame, total_time_s: float) -> list[float]:
    """Seconds since worker start at which each epoch ended: total_time_s is the last epoch's end
    and epoch_time_s spans back to the previous epoch's end."""
    times = epochs.sort_values("epoch")["epoch_time_s"].to_numpy()
    later = times[::-1].cumsum()[::-1] - times
    return list(total_time_s - later)


def of(rs: ResultSet) -> Phases:
    """The phases of every run of the set that has Progress events."""
    windows, figures = [], []
    epochs = rs.trained_epochs.groupby("run_id")
    samples = rs.telemetry.groupby("run_id")
    for run_id, progress in rs.progress.groupby("run_id", sort=False):
        run = rs.runs[rs.runs.run_id == run_id]
        if run.empty:
            continue
        run = run.iloc[0]
        own_epochs = epochs.get_group(run_id) if run_id in epochs.groups else rs.epochs.iloc[:0]
        own = run_windows(progress, own_epochs, run.batch_size, run.train_samples, run.epochs)
        if own.empty:
            continue
        windows.append(own.assign(run_id=run_id))
        evaluation = evaluations(own_epochs, run.total_time_s)
        own_samples = samples.get_group(run_id) if run_id in samples.groups else None
        figures.append(run_figures(own, evaluation, own_samples).assign(run_id=run_id))
    return Phases(
        pd.concat(windows)[list(WINDOW_COLUMNS)]
        if windows
        else pd.DataFrame(columns=WINDOW_COLUMNS),
        pd.concat(figures)[list(FIGURE_COLUMNS)]
        if figures
        else pd.DataFrame(columns=FIGURE_COLUMNS),
    )


def run_windows(
    progress: pd.DataFrame,
    epochs: pd.DataFrame,
    batch_size: int,
    train_samples: int,
    epochs_asked: int,
) -> pd.DataFrame:
    """One run's training windows, from its Progress events in the order sent, each with its
    phase. A later epoch's first window is timed from the epoch's first step
    (steady.epoch_first_window_s); in an epoch that did not end, it cannot be, and is left out."""
    rows = []
    previous = None
    for i, event in enumerate(progress.itertuples()):
        same_epoch = previous is not None and previous.epoch == event.epoch
        first_step = previous.step + 1 if same_epoch else 1
        previous = event
        steps = event.step - first_step + 1
        if not event.images_per_s > 0:
            continue  # a window of no measurable time: the recorder gave it no rate
        images = steps * batch_size
        if event.step == event.steps_per_epoch:
            images -= event.steps_per_epoch * batch_size - train_samples  # the short last batch
        first_call = i == 0
        rows.append(
            {
                "epoch": event.epoch,
                "first_step": first_step,
                "last_step": event.step,
                "steps": steps,
                "images": images,
                "end_s": event.t_s,
                "duration_s": steps * batch_size / event.images_per_s,
                "phase": STEADY
                if steady.is_steady(event.epoch, first_step, first_call, epochs_asked)
                else (FIRST if first_call else WARMUP),
            }
        )
    frame = pd.DataFrame(rows, columns=["epoch", "first_step", "last_step", "steps", "images",
                                        "end_s", "duration_s", "phase"])  # fmt: skip
    # A later epoch's first window opened at the previous epoch's end; NaN where its epoch did
    # not end (no train_time_s), dropped below with the windows of no time.
    reopened = (frame.first_step == 1) & (frame.phase != FIRST)
    # Progress counts epochs from 0; EpochEnd N + 1 ends epoch N's steps.
    train_s = frame.epoch.map(dict(zip(epochs["epoch"] - 1, epochs["train_time_s"], strict=True)))
    later_s = frame.duration_s.where(~reopened, 0.0).groupby(frame.epoch).transform("sum")
    frame.loc[reopened, "duration_s"] = steady.epoch_first_window_s(
        train_s[reopened], later_s[reopened]
    )
    frame = frame[frame.duration_s > 0]
    frame = frame.assign(
        start_s=frame.end_s - frame.duration_s, step_s=frame.duration_s / frame.steps
    )
    steady_windows = frame[frame.phase == STEADY]
    if not steady_windows.empty:
        # The median step as the recorder takes it: each window's step counted once per step.
        median_s = float(np.median(np.repeat(steady_windows.step_s, steady_windows.steps)))
        stalled = (frame.phase == STEADY) & steady.is_stalled(frame.step_s, frame.steps, median_s)
        frame.loc[stalled, "phase"] = STALLED
    return frame.sort_values("end_s")


def evaluations(epochs: pd.DataFrame, total_time_s: float) -> pd.DataFrame:
    """(start_s, end_s) of each epoch's evaluation: its eval_time_s, up to the epoch's end."""
    if epochs.empty or pd.isna(total_time_s):
        return pd.DataFrame(columns=["start_s", "end_s"])
    epochs = epochs.sort_values("epoch")
    ends = np.array(epoch_ends_s(epochs, total_time_s))
    return pd.DataFrame({"start_s": ends - epochs["eval_time_s"].to_numpy(), "end_s": ends})


def span(windows: pd.DataFrame, evaluation: pd.DataFrame) -> tuple[float, float]:
    """(start, end) of training: the first step's start to the last window's or evaluation's
    end."""
    end = windows.end_s.max()
    if not evaluation.empty:
        end = max(end, evaluation.end_s.max())
    return windows.start_s.min(), end


def sample_phases(t_s: np.ndarray, windows: pd.DataFrame, evaluation: pd.DataFrame) -> np.ndarray:
    """The phase of each sample time: the window or evaluation it falls in, (start, end]; between
    epochs inside training, None before the first step and after the last epoch's end."""
    out = np.full(len(t_s), None, dtype=object)
    start, end = span(windows, evaluation)
    out[(t_s > start) & (t_s <= end)] = BETWEEN
    for intervals, phases in (
        (evaluation, np.full(len(evaluation), EVALUATION, dtype=object)),
        (windows, windows.phase.to_numpy(dtype=object)),  # a window wins over an overlap
    ):
        if intervals.empty:
            continue
        order = np.argsort(intervals.start_s.to_numpy())
        starts = intervals.start_s.to_numpy()[order]
        ends = intervals.end_s.to_numpy()[order]
        index = np.searchsorted(starts, t_s, side="left") - 1
        inside = (index >= 0) & (t_s <= ends[np.clip(index, 0, None)])
        out[inside] = phases[order][index[inside]]
    return out


def run_figures(
    windows: pd.DataFrame, evaluation: pd.DataFrame, samples: pd.DataFrame | None
) -> pd.DataFrame:
    """One row per phase of one run: its time, images, windows and the means of its samples.
    Power is the energy counter's difference over the sample periods that ended in the phase,
    over their time (NVML's power reading where there is no counter); energy is that power over
    the phase's time."""
    start, end = span(windows, evaluation)
    durations = windows.groupby("phase")["duration_s"].sum().to_dict()
    durations[EVALUATION] = float((evaluation.end_s - evaluation.start_s).sum())
    durations[BETWEEN] = max(0.0, end - start - sum(durations.values()))
    by_phase = windows.groupby("phase")
    if samples is not None and not samples.empty:
        samples = samples.sort_values("t_s")
        t_s = samples.t_s.to_numpy(dtype=float)
        samples = samples.assign(
            phase=sample_phases(t_s, windows, evaluation),
            period_s=np.diff(t_s, prepend=np.nan),
            period_j=samples.energy_j.astype(float).diff(),
        )
    rows = []
    for phase in PHASES:
        duration_s = durations.get(phase, 0.0)
        if not duration_s > 0:
            continue
        row = {"phase": phase, "duration_s": duration_s, "samples": 0}
        if phase in WINDOW_PHASES:
            row["images"] = int(by_phase.get_group(phase).images.sum())
            row["windows"] = len(by_phase.get_group(phase))
        if samples is not None and not samples.empty:
            own = samples[samples.phase == phase]
            row["samples"] = len(own)
            row["gpu_util_pct"] = own.gpu_util_pct.mean()
            row["cpu_pct"] = own.cpu_pct.mean()
            metered = own[own.period_j.notna() & (own.period_s > 0)]
            row["power_w"] = (
                metered.period_j.sum() / metered.period_s.sum()
                if not metered.empty
                else own.power_w.mean()
            )
            row["energy_j"] = row["power_w"] * duration_s
            if row.get("images"):
                row["energy_per_1000_images_j"] = row["energy_j"] / row["images"] * 1000
        rows.append(row)
    return pd.DataFrame(rows, columns=[c for c in FIGURE_COLUMNS if c != "run_id"])
