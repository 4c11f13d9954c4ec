"""What the bare loops (benchmarks/bare_<framework>.py) share: their command line, and the
recorder's steady-state step time measured without the recorder.

A bare loop runs in its framework's environment as

    python -m benchmarks.bare_<framework> SPEC_FILE

where SPEC_FILE holds a serialised TrainSpec (the very spec benchmarks/overhead.py sends to the
service), trains it with the trainer's own pipeline, model and optimiser, and prints one JSON line:
{"step_time_median_s": ..., "steps_timed": ..., "device_name": ...}.

services/common/recorder.py times a run in windows between device synchronisations: the loop
synchronises at the first step, at an epoch's last step and whenever PROGRESS_INTERVAL_S has
passed; a window's mean step time counts once per step in it; the windows that count are
services/common/steady.py's; RunEnd.step_time_median_s is the median. A bare loop that asks `due()`
after every step, synchronises when it says so and then calls `synced()`, gets the same statistic
measured the same way, and none of the recorder's events, sampler or stream.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from fwbench.v1 import trainer_pb2 as pb
from services.common import datasets, steady
from services.common.recorder import PROGRESS_INTERVAL_S


def spec_from_argv(framework: str) -> pb.TrainSpec:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python -m benchmarks.bare_{framework} SPEC_FILE")
    spec = pb.TrainSpec.FromString(Path(sys.argv[1]).read_bytes())
    # As the service's server does before its worker: the dataset completes the spec (its classes).
    datasets.check(spec, [])
    return spec


class StepWindows:
    def __init__(self, steps_per_epoch: int, epochs: int):
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.step_times_s: list[float] = []
        self._synced_once = False

    def begin_epoch(self) -> None:
        """Call with the device idle, just before an epoch's first step."""
        now = time.perf_counter()
        self._window_start, self._window_first_step, self._last_sync = now, 1, now

    def due(self, epoch: int, step: int) -> bool:
        """True when the loop should synchronise now (step counts from 1; a loop that runs
        several steps per call asks once per call, with the call's last step), as the
        recorder's step_end decides: after the first call, at an epoch's end, or every
        PROGRESS_INTERVAL_S."""
        return (
            not self._synced_once
            or step == self.steps_per_epoch
            or time.perf_counter() - self._last_sync >= PROGRESS_INTERVAL_S
        )

    def synced(self, epoch: int, step: int) -> None:
        """Call right after the synchronisation that due() asked for."""
        now = time.perf_counter()
        window_steps = step - self._window_first_step + 1
        if steady.is_steady(
            epoch, self._window_first_step, not self._synced_once, epochs=self.epochs
        ):
            self.step_times_s.extend([(now - self._window_start) / window_steps] * window_steps)
        self._window_start, self._window_first_step, self._last_sync = now, step + 1, now
        self._synced_once = True

    def median_s(self) -> float:
        if not self.step_times_s:
            raise ValueError(
                f"no steady-state step was timed: an epoch of {self.steps_per_epoch} steps ends "
                f"within the {steady.WARMUP_STEPS} warm-up steps; train on more samples"
            )
        return statistics.median(self.step_times_s)


def print_result(windows: StepWindows, device_name: str) -> None:
    print(
        json.dumps(
            {
                "step_time_median_s": windows.median_s(),
                "steps_timed": len(windows.step_times_s),
                "device_name": device_name,
            }
        ),
        flush=True,
    )
