"""The trainer harness (services/common/harness.py): what every trainer does around its framework's
own code, driven here by a loop written in NumPy (a framework's part, without a framework) and the
real recorder: fast, no framework."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

from fwbench.v1 import trainer_pb2 as pb
from services.common import harness, injection, predictions, schedule
from services.common.recorder import Recorder
from tests.conftest import tiny_spec
from tests.test_recorder import ListSink


class NumpyRun(harness.Loop):
    """A framework's Run and Loop in NumPy: the 'model' is the training labels, each step's loss is
    loss(epoch, batch), and every call of train_steps is kept."""

    def __init__(
        self,
        spec: pb.TrainSpec,
        steps_per_call: int = 1,
        loss=lambda epoch, batch: 0.5,
        eval_s: float = 0.0,
    ):
        self.spec = spec
        self.eval_s = eval_s
        self.evaluations: list[int] = []  # train_steps calls made before each evaluation
        self.steps_per_call = steps_per_call
        self.loss = loss
        self.calls: list[tuple[int, int, int]] = []  # (epoch, first batch, count)
        self.framework_version, self.device_name, self.cuda_device_index = "numpy", "cpu", None
        self.settings = {"device": "cpu"}
        self.devices = spec.gpus
        self.device_pids = [os.getpid()] * spec.gpus

    def load(self, dataset) -> None:
        time.sleep(0.02)  # the data load's time is the harness' to take
        self.dataset = dataset

    def build(self, model_spec: pb.ModelSpec, total_steps: int) -> None:
        self.model_spec, self.total_steps = model_spec, total_steps

    def fit(self, recorder) -> None:
        harness.run_epochs(self.spec, recorder, self, self.dataset)

    def begin_epoch(self, plan: schedule.EpochPlan) -> None:
        self.epoch = 0 if not self.calls else self.calls[-1][0] + 1
        self.plan = plan

    def zero_sums(self) -> None:
        self.loss_sum, self.correct, self.window_sum = 0.0, 0, 0.0

    def train_steps(self, first: int, count: int) -> None:
        self.calls.append((self.epoch, first, count))
        for batch in range(first, first + count):
            samples = len(self.plan.batch(batch, self.spec.batch_size).order)
            loss = self.loss(self.epoch, batch)
            self.loss_sum += loss * samples
            self.correct += samples // 2
            self.window_sum += loss

    def window_loss(self, steps: int) -> float:
        return self.window_sum / steps

    def window_reported(self) -> None:
        self.window_sum = 0.0

    def evaluate(self) -> tuple[float, np.ndarray]:
        self.evaluations.append(len(self.calls))
        time.sleep(self.eval_s)
        # Every fourth test image classified wrong: accuracy 0.75.
        labels = np.asarray(self.dataset.test_labels)
        wrong = np.arange(len(labels)) % 4 == 3
        return 0.25, np.where(wrong, (labels + 1) % self.spec.model.num_classes, labels)

    def epoch_sums(self) -> tuple[float, int]:
        return self.loss_sum, self.correct

    def peak_memory(self) -> dict[str, int]:
        return {}

    def deployment(self, diverged: bool) -> pb.Deployment:
        return pb.Deployment()


def trained(run: NumpyRun) -> list[pb.TrainEvent]:
    """The events of run.spec trained through the harness with `run` as its framework's Run."""
    sink = ListSink()
    harness.train(run.spec, Recorder(sink, run.spec, "numpy", import_s=0.0), lambda *_: run)
    return sink.events


def of_kind(events: list[pb.TrainEvent], kind: str) -> list:
    return [getattr(e, kind) for e in events if e.WhichOneof("event") == kind]


def test_the_run_gets_the_injected_data_and_model_and_its_load_is_timed():
    spec = tiny_spec(epochs=2, model__num_classes=10, sample_interval_ms=0)
    run = NumpyRun(injection.probed_spec(spec, "head_classes", "graph"))
    started = of_kind(trained(run), "run_started")[0]
    assert run.model_spec.num_classes == 11
    assert run.total_steps == 2 * schedule.steps_per_epoch(64, 32)
    assert started.data_load_s >= 0.02
    assert started.settings == {"device": "cpu", "data": run.dataset.description}


def test_several_steps_per_call_train_every_batch_once_in_order_and_report_per_call():
    # 268 samples of batch 8: a call of 32 batches, the full one left over, the short one alone.
    spec = tiny_spec(epochs=2, batch_size=8, data__train_limit=268, sample_interval_ms=0)
    run = NumpyRun(spec, steps_per_call=32)
    events = trained(run)
    assert run.calls == [(e, first, n) for e in (0, 1) for first, n in ((0, 32), (32, 1), (33, 1))]
    for epoch in (0, 1):
        steps = [p.step for p in of_kind(events, "progress") if p.epoch == epoch]
        assert set(steps) <= {32, 33, 34} and steps[-1] == 34
    ends = of_kind(events, "epoch_end")
    assert [e.epoch for e in ends] == [0, 1, 2]
    assert ends[1].train_loss == pytest.approx(0.5)
    assert ends[1].train_accuracy == (33 * 4 + 2) / 268
    assert (ends[1].test_loss, ends[1].test_accuracy) == (0.25, 0.75)
    end = of_kind(events, "run_end")[0]
    assert end.status == "ok"
    # The final evaluation image by image, as the proto packs it.
    correct = predictions.unpack(end.test_correct, len(run.dataset.test_labels))
    assert list(correct) == [i % 4 != 3 for i in range(len(run.dataset.test_labels))]


def test_a_non_finite_window_loss_stops_training_there_and_its_epoch_is_no_result():
    # 8 steps an epoch; the window that ends epoch 1 holds an infinite loss.
    spec = tiny_spec(epochs=3, batch_size=8, data__train_limit=64, sample_interval_ms=0)
    run = NumpyRun(spec, loss=lambda epoch, batch: math.inf if (epoch, batch) == (1, 7) else 0.5)
    events = trained(run)
    assert run.calls[-1] == (1, 7, 1)  # nothing trained after it
    assert [e.epoch for e in of_kind(events, "epoch_end")] == [0, 1]
    end = of_kind(events, "run_end")[0]
    assert end.status == "diverged"
    assert (end.divergence.epoch, end.divergence.last_step) == (1, 8)
    assert end.test_correct == b""  # no per-image results from a diverged model
    assert np.isinf(of_kind(events, "progress")[-1].loss)


def test_the_baseline_is_epoch_0_evaluated_before_the_first_step_on_no_training_clock():
    spec = tiny_spec(epochs=1, batch_size=8, data__train_limit=64, sample_interval_ms=0)
    run = NumpyRun(spec, eval_s=0.3)
    events = trained(run)
    assert run.evaluations == [0, len(run.calls)]  # before any step, then after the epoch
    baseline, epoch = of_kind(events, "epoch_end")
    assert (baseline.epoch, baseline.before_training) == (0, True)
    assert (baseline.test_loss, baseline.test_accuracy) == (0.25, 0.75)
    assert baseline.eval_time_s >= 0.3 and baseline.train_time_s == 0
    assert not baseline.HasField("train_loss") and not baseline.HasField("images_per_s")
    assert (epoch.epoch, epoch.before_training) == (1, False)
    end = of_kind(events, "run_end")[0]
    assert end.epochs_completed == 1 and end.train_time_s == epoch.train_time_s
    # The 0.3 s baseline is not in the time to the first step (a 0.02 s data load and a step).
    assert end.time_to_first_step_s < 0.3


def test_a_debug_probe_trains_at_once_without_a_baseline():
    spec = tiny_spec(epochs=1, batch_size=8, data__train_limit=64, sample_interval_ms=0)
    run = NumpyRun(injection.probed_spec(spec, "none", "graph"))
    events = trained(run)
    assert [e.epoch for e in of_kind(events, "epoch_end")] == [1]
