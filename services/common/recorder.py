"""Turns a trainer's hooks into TrainEvents: one bookkeeping for every framework.

The trainer harness (services/common/harness.py: its train and run_epochs, or a trainer's
Keras callback for the epochs) calls, in order:

    recorder.run_started(...)          after import, data load and model build
    recorder.baseline(...)             the initial model's evaluation: epoch 0, on no training clock
    recorder.train_begin()             just before the first step
    for each step:  if recorder.step_end(epoch, step):           # cheap host clock check
                        sync the device, then recorder.progress(epoch, step, loss)
    recorder.epoch_end(...)            after each epoch's evaluation
    recorder.run_end(...)
    recorder.deployment(...)           when the spec asks for it (services/common/deploy.py)

Step times come from windows between device synchronisations (progress points), never from a
per-step sync, so measuring does not change what is measured; which windows are steady state is
services/common/steady.py's.

The recorder is also the one place that judges a run: a window's loss that is NaN or infinite
marks the run diverged (`recorder.diverged`; the trainer stops training), later epoch ends are
left out, and run_end reports status "diverged" with the window where it happened.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np

from fwbench.v1 import trainer_pb2 as pb
from services.common import predictions, steady
from services.common.telemetry import Sampler

PROGRESS_INTERVAL_S = 0.25


class Recorder:
    def __init__(self, sink, spec: pb.TrainSpec, framework: str, import_s: float):
        self._sink = sink
        self._spec = spec
        self._framework = framework
        self._import_s = import_s
        self._batch_size = spec.batch_size
        self._sampler: Sampler | None = None
        self._step_times_s: list[float] = []
        # A later epoch's first window opens at the previous epoch's end, so its own time is
        # known only at its epoch's end (steady.epoch_first_window_s): its steps wait there, and
        # the time of the epoch's other windows is summed.
        self._first_window_steps = 0
        self._later_windows_s = 0.0
        self._epoch_train_times_s: list[float] = []
        self._final_test_accuracy: float | None = None
        self._first_step_s = 0.0
        self._first_reported = False
        self._time_to_first_step_s = 0.0
        self._divergence: pb.Divergence | None = None
        # When training ended, on the worker's clock: the last epoch's end, or the divergence.
        self._end_t_s: float | None = None
        # The baseline evaluation ran before the first step: time to it is not time to train.
        self._baseline_eval_s = 0.0

    @property
    def diverged(self) -> bool:
        """True once a progress loss was not finite: the trainer must stop training."""
        return self._divergence is not None

    # --- run -------------------------------------------------------------------------------

    def run_started(
        self,
        *,
        framework_version: str,
        device_name: str,
        cuda_device_index: int | None,
        device_pids: list[int],
        train_samples: int,
        test_samples: int,
        steps_per_epoch: int,
        data_load_s: float,
        build_s: float,
        settings: dict[str, str],
    ) -> None:
        self._steps_per_epoch = steps_per_epoch
        self._train_samples = train_samples
        self._sampler = Sampler(
            interval_ms=self._spec.sample_interval_ms,
            cuda_device_index=cuda_device_index,
            pids=device_pids,
            t_s=self._sink.t_s,
            emit=lambda samples: self._emit(telemetry=pb.TelemetryBatch(samples=samples)),
        )
        self._sampler.start()
        self._emit(
            run_started=pb.RunStarted(
                run_id=self._spec.run_id,
                framework=self._framework,
                framework_version=framework_version,
                device_name=device_name,
                gpu=self._sampler.gpu_name,
                train_samples=train_samples,
                test_samples=test_samples,
                steps_per_epoch=steps_per_epoch,
                per_device_batch_size=self._spec.batch_size // self._spec.gpus,
                num_classes=self._spec.model.num_classes,
                import_s=self._import_s,
                data_load_s=data_load_s,
                build_s=build_s,
                settings=settings,
            )
        )

    def baseline(self, *, test_loss: float, test_accuracy: float, eval_time_s: float) -> None:
        """Epoch 0: the initial model's evaluation, after run_started and before train_begin, so
        that no training clock (the epochs', time to first step, throughput) includes it."""
        self._baseline_eval_s = eval_time_s
        self._emit(
            epoch_end=pb.EpochEnd(
                epoch=0,
                before_training=True,
                test_loss=test_loss,
                test_accuracy=test_accuracy,
                train_time_s=0.0,
                eval_time_s=eval_time_s,
                epoch_time_s=eval_time_s,
                between_epoch_overhead_s=0.0,
            )
        )

    def train_begin(self) -> None:
        now = time.perf_counter()
        self._epoch_mark = now
        self._window_start, self._window_first_step = now, 1
        self._last_report = now
        self._loss_steps = 0
        self._energy_mark_j = self._sampler.energy_j()

    # --- steps -----------------------------------------------------------------------------

    def step_end(self, epoch: int, step: int) -> bool:
        """True when the trainer should synchronise and report progress now: the very first
        step (its time includes tracing/compilation), an epoch's last step, or every 0.25 s.
        A trainer that runs several steps per call (Keras' steps_per_execution) calls this once
        per call, with the last step's number."""
        if not 1 <= step <= self._steps_per_epoch:
            # A trainer that miscounts its steps would time and label windows wrongly.
            raise RuntimeError(
                f"the trainer reported step {step} of an epoch of {self._steps_per_epoch} steps"
            )
        return (
            not self._first_reported
            or step == self._steps_per_epoch
            or time.perf_counter() - self._last_report >= PROGRESS_INTERVAL_S
        )

    def progress(self, epoch: int, step: int, loss: float) -> None:
        """Called after a device synchronisation; `loss` is the mean since the last report."""
        now = time.perf_counter()
        window_steps = step - self._window_first_step + 1
        window_s = now - self._window_start
        if not self._first_reported:
            # The first call: one step, or steps_per_execution steps, compilation included.
            self._first_step_s = window_s
            self._time_to_first_step_s = self._sink.t_s() - self._baseline_eval_s
            self._first_reported = True
        elif steady.is_steady(
            epoch, self._window_first_step, first_call=False, epochs=self._spec.epochs
        ):
            if self._window_first_step == 1:
                self._first_window_steps = window_steps
            else:
                self._step_times_s.extend([window_s / window_steps] * window_steps)
        if self._window_first_step > 1:
            self._later_windows_s += window_s
        self._emit(
            progress=pb.Progress(
                epoch=epoch,
                step=step,
                steps_per_epoch=self._steps_per_epoch,
                loss=loss,
                images_per_s=window_steps * self._batch_size / window_s if window_s else 0.0,
            )
        )
        if not math.isfinite(loss) and self._divergence is None:
            self._divergence = pb.Divergence(
                epoch=epoch, first_step=self._window_first_step, last_step=step, loss=str(loss)
            )
            self._end_t_s = self._sink.t_s()
        self._last_report = now
        self._window_start, self._window_first_step = now, step + 1

    # --- epochs ----------------------------------------------------------------------------

    def epoch_end(
        self,
        epoch: int,
        *,
        train_loss: float,
        train_accuracy: float,
        test_loss: float,
        test_accuracy: float,
        train_time_s: float,
        eval_time_s: float,
    ) -> None:
        """After the 0-based training epoch `epoch` and its evaluation: EpochEnd epoch + 1."""
        if self.diverged:
            # The epoch did not complete (Keras still evaluates it): nothing of it is a result.
            return
        if self._first_window_steps:
            window_s = steady.epoch_first_window_s(train_time_s, self._later_windows_s)
            # Not positive only from a trainer whose train_time_s misses its own windows: no
            # step time rather than a negative one.
            if window_s > 0:
                steps = self._first_window_steps
                self._step_times_s.extend([window_s / steps] * steps)
        now = time.perf_counter()
        epoch_time_s = now - self._epoch_mark
        self._epoch_mark = now
        self._epoch_train_times_s.append(train_time_s)
        self._final_test_accuracy = test_accuracy
        energy_now_j = self._sampler.energy_j()
        event = pb.EpochEnd(
            epoch=epoch + 1,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            train_time_s=train_time_s,
            eval_time_s=eval_time_s,
            epoch_time_s=epoch_time_s,
            between_epoch_overhead_s=epoch_time_s - train_time_s - eval_time_s,
            images_per_s=self._steps_images(train_time_s),
        )
        if energy_now_j is not None and self._energy_mark_j is not None:
            event.energy_j = energy_now_j - self._energy_mark_j
        self._energy_mark_j = energy_now_j
        self._emit(epoch_end=event)
        self._end_t_s = self._sink.t_s()
        self._window_start, self._window_first_step = time.perf_counter(), 1
        self._first_window_steps, self._later_windows_s = 0, 0.0

    def _steps_images(self, train_time_s: float) -> float:
        return self._train_samples / train_time_s if train_time_s else 0.0

    # --- end -------------------------------------------------------------------------------

    def run_end(
        self,
        *,
        peak_framework_mem_bytes: int | None = None,
        peak_framework_reserved_bytes: int | None = None,
        test_correct: np.ndarray | None = None,
        saved_weights_file: str = "",
        saved_weights_sha256: str = "",
    ) -> None:
        """test_correct: per test image, whether the final evaluation classified it right;
        saved_weights_*: the checkpoint saved after training, if any."""
        summary = self._sampler.stop()
        train_time_s = sum(self._epoch_train_times_s)
        epochs = len(self._epoch_train_times_s)
        event = pb.RunEnd(
            epochs_completed=epochs,
            train_time_s=train_time_s,
            # The proto's end is the last epoch's (or the divergence), not this call: a framework
            # tears down after training (Keras' fit takes seconds) and that is not training time.
            total_time_s=self._sink.t_s() if self._end_t_s is None else self._end_t_s,
            time_to_first_step_s=self._time_to_first_step_s,
            first_step_s=self._first_step_s,
            energy_method=summary.energy_method,
            status="diverged" if self.diverged else "ok",
            saved_weights_file=saved_weights_file,
            saved_weights_sha256=saved_weights_sha256,
        )
        if self._divergence is not None:
            event.divergence.CopyFrom(self._divergence)
        elif test_correct is not None:
            event.test_correct = predictions.pack(test_correct)
        if train_time_s:
            event.images_per_s = self._steps_images(train_time_s) * epochs
        if self._step_times_s:
            event.step_time_median_s, event.step_time_p90_s = median_and_p90(self._step_times_s)
        for name, value in (
            ("final_test_accuracy", self._final_test_accuracy),
            ("peak_framework_mem_bytes", peak_framework_mem_bytes),
            ("peak_framework_reserved_bytes", peak_framework_reserved_bytes),
            ("peak_gpu_mem_bytes", summary.peak_gpu_mem_bytes),
            ("mean_gpu_util_pct", summary.mean_gpu_util_pct),
            ("energy_j", summary.energy_j),
        ):
            if value is not None:
                setattr(event, name, value)
        self._emit(run_end=event)

    def deployment(self, deployment: pb.Deployment) -> None:
        """After run_end: the trained model's serving formats, measured."""
        self._emit(deployment=deployment)

    def _emit(self, **event) -> None:
        self._sink.event(pb.TrainEvent(**event))


def median_and_p90(samples: list[float]) -> tuple[float, float]:
    """The median and the 90th percentile of samples, both interpolated the same way
    (statistics' inclusive method, as numpy's default), so p90 >= median always."""
    if len(samples) == 1:
        return samples[0], samples[0]
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    return statistics.median(samples), deciles[8]
