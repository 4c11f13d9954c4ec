"""The recorder (services/common/recorder.py) judges what a trainer tells it: fast, no framework."""

from __future__ import annotations

import os
import time

import pytest

from services.common.recorder import Recorder
from tests.conftest import tiny_spec


class ListSink:
    """The worker's Sink, keeping the events in a list instead of writing them to the parent."""

    def __init__(self):
        self.events = []
        self._origin_s = time.time()

    def t_s(self) -> float:
        return time.time() - self._origin_s

    def event(self, event) -> None:
        self.events.append(event)


def started_recorder(steps_per_epoch: int) -> Recorder:
    recorder = Recorder(ListSink(), tiny_spec(sample_interval_ms=0), "pytorch", import_s=0.0)
    recorder.run_started(
        framework_version="test",
        device_name="cpu",
        cuda_device_index=None,
        device_pids=[os.getpid()],
        train_samples=steps_per_epoch * 32,
        test_samples=32,
        steps_per_epoch=steps_per_epoch,
        data_load_s=0.0,
        build_s=0.0,
        settings={},
    )
    recorder.train_begin()
    return recorder


@pytest.mark.parametrize("step", [0, 41, 64])
def test_a_step_outside_the_epoch_is_a_trainer_error_not_a_window(step):
    # Keras with steps_per_execution once reported step 64 of a 40-step epoch (its last
    # execution's first step + 31); a window over it would time and label the wrong steps.
    recorder = started_recorder(steps_per_epoch=40)
    with pytest.raises(RuntimeError, match=f"reported step {step} of an epoch of 40 steps"):
        recorder.step_end(0, step)


def test_every_step_of_the_epoch_is_accepted_and_the_last_one_reports():
    recorder = started_recorder(steps_per_epoch=40)
    assert recorder.step_end(0, 1)  # the first step always reports (it includes compilation)
    recorder.progress(0, 1, 2.3)
    assert recorder.step_end(0, 40)


def test_a_later_epochs_first_window_is_timed_from_its_first_step_not_the_last_epochs_end():
    # The recorder opens an epoch's first window when the previous epoch ends, so that window
    # also spans the time between the epochs (the next epoch's plan; Keras' iterator, seconds):
    # counted as steps, 0.4 s of it made ten 20 ms steps look like 60 ms ones.
    step_s, between_epochs_s = 0.02, 0.4
    sink = ListSink()
    recorder = Recorder(sink, tiny_spec(sample_interval_ms=0), "pytorch", import_s=0.0)
    recorder.run_started(
        framework_version="test",
        device_name="cpu",
        cuda_device_index=None,
        device_pids=[os.getpid()],
        train_samples=12 * 32,
        test_samples=32,
        steps_per_epoch=12,
        data_load_s=0.0,
        build_s=0.0,
        settings={},
    )
    recorder.train_begin()
    # Epoch 1: the first call, the warm-up to step 10, then two steady steps; epoch 2: a window
    # of ten steps that opened at epoch 1's end, then two steps.
    windows = [((1, 1), (2, 10), (11, 12)), ((1, 10), (11, 12))]
    for epoch, epoch_windows in enumerate(windows):
        epoch_start = time.perf_counter()
        for window_first, window_last in epoch_windows:
            time.sleep((window_last - window_first + 1) * step_s)
            recorder.progress(epoch, window_last, 2.3)
        recorder.epoch_end(
            epoch,
            train_loss=2.3,
            train_accuracy=0.1,
            test_loss=2.3,
            test_accuracy=0.1,
            train_time_s=time.perf_counter() - epoch_start,
            eval_time_s=0.0,
        )
        time.sleep(between_epochs_s)
    recorder.run_end()
    end = sink.events[-1].run_end
    assert end.step_time_median_s == pytest.approx(step_s, rel=0.25)
    assert end.step_time_p90_s == pytest.approx(step_s, rel=0.25)
