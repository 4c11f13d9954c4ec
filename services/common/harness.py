"""What every trainer does around its framework's own code: one bookkeeping for all of them.

A trainer (services/<framework>/trainer.py) writes only what its framework writes: the device and
its knobs, the input pipeline, the model, the training step and its loop (Keras' `fit`, or the
hooks of `Loop`). `train` runs a job through it, in the recorder's order
(services/common/recorder.py):

    run = start(spec, inject)                the device resolved, the spec's knobs applied
    run.load(dataset)                        timed: data_load_s (injection's dataset)
    run.build(model_spec, total_steps)       timed: build_s (injection's model spec)
    recorder.run_started(...)
    recorder.baseline(...)                   run.evaluate() before training: epoch 0, timed apart
    run.fit(recorder)                        every epoch: run_epochs, or Keras' fit
    recorder.run_end(**run.peak_memory())    with the checkpoint, when the spec asks to save one
    recorder.deployment(run.deployment(recorder.diverged))   when the spec asks for it

`run_epochs` is the epoch loop of a framework whose loop is our own (PyTorch, JAX), written once
with the recorder's measuring rules: the device is synchronised only where the recorder asks for
progress (and by the evaluation), never per step; an epoch's training time runs from its first
step to its last report, which synchronises; a non-finite window loss stops training.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from fwbench.v1 import trainer_pb2 as pb
from services.common import datasets, injection, schedule, weights
from services.common.spec import SpecError


class Run(Protocol):
    """One training job of a framework, made by its trainer's start(spec, inject) after it has
    resolved the device and applied the spec's knobs."""

    # For RunStarted.
    framework_version: str
    device_name: str
    # The CUDA device the telemetry sampler watches, None on the CPU.
    cuda_device_index: int | None
    # The devices it trains on in data parallel: the spec's gpus, or it is refused (a framework
    # must never train a run on fewer devices than asked and report it as asked).
    devices: int
    # The process that drives each device (PyTorch: each rank's; TensorFlow and JAX drive every
    # device from the worker): the host numbers of each device's telemetry.
    device_pids: list[int]
    # The resolved settings (services/common/recorder.py run_started); the harness adds "data".
    settings: dict[str, str]

    def load(self, dataset: datasets.Dataset) -> None:
        """Puts the dataset where training reads it; returns once it is there."""

    def build(self, model_spec: pb.ModelSpec, total_steps: int) -> None:
        """Builds the model and its optimizer (a schedule of total_steps); returns once they
        are on the device."""

    def fit(self, recorder) -> None:
        """Trains every epoch, reporting through the recorder's hooks."""

    def evaluate(self) -> tuple[float, np.ndarray]:
        """(test loss, the predicted class of each test image) of the model as it is, in eval
        mode; returns once the device is done."""

    def peak_memory(self) -> dict[str, int | None]:
        """The framework's peak memory counters, as the recorder's run_end takes them."""

    def deployment(self, diverged: bool) -> pb.Deployment:
        """The trained model in the framework's serving formats, measured (deploy.measure)."""

    def canonical_weights(self) -> dict[str, np.ndarray]:
        """The canonical model's every tensor as it is, by canonical name in PyTorch's layout
        (services/common/weights.py): what --save-weights writes."""

    def test_predictions(self) -> np.ndarray:
        """The class the trained model predicts for each test image, in the test split's order,
        from the final evaluation (or, where the framework's evaluation does not show them, one
        more pass in eval mode after training, outside every timed phase)."""


def train(
    spec: pb.TrainSpec, recorder, start: Callable[[pb.TrainSpec, injection.Injection], Run]
) -> None:
    """Trains spec through the Run that start makes, reporting to the recorder (see above)."""
    inject = injection.Injection(spec)
    run = start(spec, inject)
    if run.devices != spec.gpus:
        raise SpecError(
            f"gpus: {spec.gpus} devices asked for, but this service trains the run on "
            f"{run.devices}; use gpus {run.devices}"
        )

    start_s = time.perf_counter()
    dataset = inject.dataset(datasets.load(spec))
    run.load(dataset)
    data_load_s = time.perf_counter() - start_s

    start_s = time.perf_counter()
    train_samples = len(dataset.train_labels)
    steps = schedule.steps_per_epoch(train_samples, spec.batch_size)
    run.build(inject.model_spec(spec.model), steps * spec.epochs)
    build_s = time.perf_counter() - start_s

    recorder.run_started(
        framework_version=run.framework_version,
        device_name=run.device_name,
        cuda_device_index=run.cuda_device_index,
        device_pids=run.device_pids,
        train_samples=train_samples,
        test_samples=len(dataset.test_labels),
        steps_per_epoch=steps,
        data_load_s=data_load_s,
        build_s=build_s,
        settings=run.settings | {"data": dataset.description},
    )
    # A debug probe measures how soon training meets its mistake: no evaluation goes first.
    if not spec.HasField("debug"):
        evaluate_before_training(recorder, run, dataset.test_labels)
    run.fit(recorder)
    # Per image, for paired statistics: never from a diverged model, nor before an epoch ended.
    completed = not recorder.diverged and spec.epochs > 0
    correct = run.test_predictions() == dataset.test_labels if completed else None
    saved = save_weights(spec, run) if spec.save_weights_dir and completed else {}
    recorder.run_end(**run.peak_memory(), test_correct=correct, **saved)
    if spec.deploy.deploy_enabled:
        recorder.deployment(run.deployment(recorder.diverged))


def follow(spec: pb.TrainSpec, start: Callable[[pb.TrainSpec, injection.Injection], Loop]) -> None:
    """What a data-parallel device other than the first does where each device has a process of
    its own (PyTorch's ranks): the same load, build and training steps as the first device's
    run, in the same order (every collective operation of the framework meets its peers), and no
    report, no evaluation (the first device evaluates and reports for all). The first device
    ends a follower that is still training when the run stops early (a divergence)."""
    inject = injection.Injection(spec)
    loop = start(spec, inject)
    dataset = inject.dataset(datasets.load(spec))
    loop.load(dataset)
    train_samples = len(dataset.train_labels)
    steps = schedule.steps_per_epoch(train_samples, spec.batch_size)
    loop.build(inject.model_spec(spec.model), steps * spec.epochs)
    calls = schedule.executions(train_samples, spec.batch_size, loop.steps_per_call)
    for epoch in range(spec.epochs):
        loop.begin_epoch(schedule.epoch_plan(spec.seed, epoch, train_samples, spec.data.augment))
        loop.zero_sums()
        for first, count in calls:
            loop.train_steps(first, count)
        loop.end_epoch()
        loop.epoch_sums()


def save_weights(spec: pb.TrainSpec, run: Run) -> dict[str, str]:
    """The trained model as a canonical weights file in spec.save_weights_dir (after training, in
    no timed phase); RunEnd's saved_weights_* fields."""
    path = Path(spec.save_weights_dir) / f"{spec.run_id or 'run'}{weights.SUFFIX}"
    digest = weights.save(path, spec.model.name, run.canonical_weights(), f"run {spec.run_id}")
    return {"saved_weights_file": str(path), "saved_weights_sha256": digest}


def evaluate_before_training(recorder, run: Run, test_labels: np.ndarray) -> None:
    """The baseline, epoch 0: the initial model on the test split, timed on a clock of its own
    (the evaluation's compilation, where a framework compiles it, is paid here)."""
    start_s = time.perf_counter()
    test_loss, predicted = run.evaluate()
    recorder.baseline(
        test_loss=test_loss,
        test_accuracy=float(np.mean(predicted == test_labels)),
        eval_time_s=time.perf_counter() - start_s,
    )


class Loop(abc.ABC):
    """A framework's training loop, as the hooks run_epochs calls (in this order, each epoch).

    The epoch's sums (training loss and correct predictions, and the loss since the last progress
    report) stay on the device between reports: reading them every step would synchronise every
    step."""

    # Training steps per call of train_steps(): one, or a compiled program's several (the tuned
    # mode's schedule.steps_per_execution).
    steps_per_call: int = 1
    # The last evaluation's predictions (run_epochs keeps them).
    test_predicted: np.ndarray

    def test_predictions(self) -> np.ndarray:
        return self.test_predicted

    @abc.abstractmethod
    def begin_epoch(self, plan: schedule.EpochPlan) -> None:
        """Before the epoch's clock starts: its plan given to the pipeline, the model in training
        mode; returns with the device idle where the framework can wait for it."""

    @abc.abstractmethod
    def zero_sums(self) -> None:
        """The epoch's first work on its clock: its sums set to zero."""

    @abc.abstractmethod
    def train_steps(self, first: int, count: int) -> None:
        """Batches first .. first + count - 1 of the epoch trained, in order (count is at most
        steps_per_call, and one batch size throughout): dispatched, not waited for."""

    @abc.abstractmethod
    def window_loss(self, steps: int) -> float:
        """The mean training loss of the `steps` steps since the last report: waits for them."""

    @abc.abstractmethod
    def window_reported(self) -> None:
        """After a report that training goes on from: the loss since the last report restarts."""

    def end_epoch(self) -> None:  # noqa: B027 (a hook that most loops leave empty)
        """After the epoch's last step (or a divergence), on its clock: what evaluation and
        deployment read is brought up to date."""

    @abc.abstractmethod
    def evaluate(self) -> tuple[float, np.ndarray]:
        """(test loss, the predicted class of each test image) in eval mode; returns once the
        device is done."""

    @abc.abstractmethod
    def epoch_sums(self) -> tuple[float, int]:
        """The epoch's (training loss summed over its samples, correct predictions)."""


def run_epochs(spec: pb.TrainSpec, recorder, loop: Loop, dataset: datasets.Dataset) -> None:
    """Trains spec.epochs epochs of the shared batch schedule through `loop`, reporting to the
    recorder; stops after a progress window whose loss is not finite."""
    train_samples = len(dataset.train_labels)
    calls = schedule.executions(train_samples, spec.batch_size, loop.steps_per_call)
    recorder.train_begin()
    for epoch in range(spec.epochs):
        loop.begin_epoch(schedule.epoch_plan(spec.seed, epoch, train_samples, spec.data.augment))
        epoch_start = time.perf_counter()
        loop.zero_sums()
        window_steps = 0
        for first, count in calls:
            loop.train_steps(first, count)
            window_steps += count
            if recorder.step_end(epoch, first + count):
                recorder.progress(epoch, first + count, loop.window_loss(window_steps))
                if recorder.diverged:
                    break
                loop.window_reported()
                window_steps = 0
        loop.end_epoch()
        if recorder.diverged:
            # Training further on NaN/inf weights would measure nothing: what was measured stays.
            break
        # The epoch's last step always reports, so the device is synchronised here.
        train_time_s = time.perf_counter() - epoch_start

        eval_start = time.perf_counter()
        test_loss, loop.test_predicted = loop.evaluate()
        eval_time_s = time.perf_counter() - eval_start
        test_accuracy = float(np.mean(loop.test_predicted == dataset.test_labels))
        loss_sum, correct = loop.epoch_sums()
        recorder.epoch_end(
            epoch,
            train_loss=loss_sum / train_samples,
            train_accuracy=correct / train_samples,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            train_time_s=train_time_s,
            eval_time_s=eval_time_s,
        )
