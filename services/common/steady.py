"""Steady state: which of a run's training windows count, defined once.

A run is timed in windows between device synchronisations (services/common/recorder.py): the
first call (one step, or one dispatch of several steps, with tracing or compilation), then a
window every PROGRESS_INTERVAL_S and at every epoch's last step. The recorder's steady-state
step time (RunEnd.step_time_median_s), the bare loops' (benchmarks/bare.py) and the report's
steady-state GPU busy, power and energy per image (orchestrator/report/phases.py) all take their
windows from `is_steady`, and the report flags a steady window slower than STALL_FACTOR times
the run's median step as stalled (`is_stalled`). Framework-free, so every environment imports it.
"""

from __future__ import annotations

# Steps of a one-epoch run that count as warm-up: a window that begins within them is not
# steady. A run of several epochs leaves out its whole first epoch instead: its end runs shapes
# the epoch's start did not (the remainder after the last whole dispatch of K steps, the short
# last batch), which compile (XLA) or are captured and autotuned again (CUDA graphs, cuDNN) —
# on an H200, 10 to 28 s in epoch 1's last windows, none in later epochs.
WARMUP_STEPS = 10
# A steady window whose step takes more than this many times the run's median step was slowed by
# something other than the framework (another process, the machine): far beyond run-to-run noise,
# well below what a real stall costs (a stalled PyTorch epoch's windows ran 7.3 s against 2.8 s).
STALL_FACTOR = 3.0
# A window of fewer steps is never called stalled: its time is mostly the synchronisation and the
# dispatch at an epoch's boundary (an epoch's first step, its short last batch run alone), a few
# milliseconds that a GPU step of 1-4 ms makes look 3x slow.
STALL_MIN_STEPS = 8

DEFINITION = (
    "Steady state is every training window between two device synchronisations after the "
    "warm-up: the whole first epoch in a run of several (its last steps compile or capture the "
    "epoch's remainder and short last batch), else the first call (tracing or compilation "
    f"included) and the first {WARMUP_STEPS} steps; each epoch's first window is timed from the "
    "epoch's first step, so evaluation and the time between epochs are left out. The step times "
    "take every such window, while the GPU busy, power and energy per image leave out stalls "
    f"(windows of {STALL_MIN_STEPS} steps or more whose step took over {STALL_FACTOR:g}× the "
    "run's median), which are counted on their own."
)


def is_steady(epoch: int, first_step: int, first_call: bool, epochs: int) -> bool:
    """Whether a window of `epoch` (from 0) that began at step `first_step` (from 1) is steady
    state in a run of `epochs` epochs; `first_call`: it is the run's first window."""
    if first_call:
        return False
    return epoch > 0 if epochs > 1 else first_step > WARMUP_STEPS


def epoch_first_window_s(train_time_s: float, later_windows_s: float) -> float:
    """The time of a later epoch's first window counted from the epoch's first step: the
    recorder opens it at the previous epoch's end, so it also spans the time between the epochs
    (the next epoch's plan, Keras' iterator); the epoch's train_time_s (its first step to its last
    synchronisation) less the epoch's other windows does not."""
    return train_time_s - later_windows_s


def is_stalled(step_s, steps, median_step_s: float):
    """Whether a steady window of `steps` steps that took `step_s` each was stalled, given the
    run's median step (scalars, or pandas Series of windows)."""
    return (step_s > STALL_FACTOR * median_step_s) & (steps >= STALL_MIN_STEPS)
