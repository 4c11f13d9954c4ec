"""Turns a trainer's hooks into TrainEvents: one bookkeeping for every framework.

A trainer (the canonical PyTorch loop, a Keras callback) calls, in order:

    recorder.run_started(...)          after import, data load and model build
    recorder.train_begin()             just before the first step
    for each step:  if recorder.step_end(epoch, step):           # cheap host clock check
                        sync the device, then recorder.progress(epoch, step, loss)
    recorder.epoch_end(...)            after each epoch's evaluation
    recorder.run_end(...)

Step times come from windows between device synchronisations (progress points), never from a
per-step sync, so measuring does not change what is measured.
"""

from __future__ import annotations

import math
import statistics
import time

from fwbench.v1 import trainer_pb2 as pb
from services.common.telemetry import Sampler

PROGRESS_INTERVAL_S = 0.25
# Steps of epoch 0 that count as warm-up, excluded from the steady-state step time.
WARMUP_STEPS = 10


class Diverged(Exception):
    """The training loss became NaN or infinite; RunEnd (status diverged) has been sent."""


def quantile(values: list[float], q: float) -> float:
    """The q-quantile, interpolated between order statistics (so p90 >= median, always)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Recorder:
    def __init__(self, sink, spec: pb.TrainSpec, framework: str, import_s: float):
        self._sink = sink
        self._spec = spec
        self._framework = framework
        self._import_s = import_s
        self._batch_size = spec.batch_size
        self._sampler: Sampler | None = None
        self._step_times_s: list[float] = []
        self._epoch_train_times_s: list[float] = []
        self._final_test_accuracy = 0.0
        self._first_step_s = 0.0
        self._time_to_first_step_s = 0.0
        self._first_reported = False
        self._last_epoch_end_t_s = 0.0

    # --- run -------------------------------------------------------------------------------

    def run_started(
        self,
        *,
        framework_version: str,
        device_name: str,
        cuda_device_index: int | None,
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
                import_s=self._import_s,
                data_load_s=data_load_s,
                build_s=build_s,
                settings=settings,
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
        return (
            not self._first_reported
            or step == self._steps_per_epoch
            or time.perf_counter() - self._last_report >= PROGRESS_INTERVAL_S
        )

    def progress(self, epoch: int, step: int, loss: float) -> None:
        """Called after a device synchronisation; `loss` is the mean since the last report.
        A loss that is not a finite number ends the run as diverged: RunEnd is sent, then
        Diverged is raised for the trainer's loop to stop (the worker exits normally)."""
        if not math.isfinite(loss):
            self.run_end(diverged=(epoch, self._window_first_step, step))
            raise Diverged(f"loss {loss} in epoch {epoch}, steps {self._window_first_step}..{step}")
        now = time.perf_counter()
        window_steps = step - self._window_first_step + 1
        window_s = now - self._window_start
        if not self._first_reported:
            # The first call: one step, or steps_per_execution steps, compilation included.
            self._first_step_s = window_s
            self._time_to_first_step_s = self._sink.t_s()
            self._first_reported = True
        elif epoch > 0 or self._window_first_step > WARMUP_STEPS:
            self._step_times_s.extend([window_s / window_steps] * window_steps)
        self._emit(
            progress=pb.Progress(
                epoch=epoch,
                step=step,
                steps_per_epoch=self._steps_per_epoch,
                loss=loss,
                images_per_s=window_steps * self._batch_size / window_s if window_s else 0.0,
            )
        )
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
        now = time.perf_counter()
        epoch_time_s = now - self._epoch_mark
        self._epoch_mark = now
        self._epoch_train_times_s.append(train_time_s)
        self._final_test_accuracy = test_accuracy
        self._last_epoch_end_t_s = self._sink.t_s()
        energy_now_j = self._sampler.energy_j()
        event = pb.EpochEnd(
            epoch=epoch,
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
        self._window_start, self._window_first_step = time.perf_counter(), 1

    def _steps_images(self, train_time_s: float) -> float:
        return self._train_samples / train_time_s if train_time_s else 0.0

    # --- end -------------------------------------------------------------------------------

    def run_end(
        self,
        *,
        peak_framework_mem_bytes: int | None = None,
        peak_framework_reserved_bytes: int | None = None,
        diverged: tuple[int, int, int] | None = None,
    ) -> None:
        """The run's summary; diverged: (epoch, first step, last step) of the window whose loss
        was not a number (progress() passes it)."""
        summary = self._sampler.stop()
        train_time_s = sum(self._epoch_train_times_s)
        epochs = len(self._epoch_train_times_s)
        event = pb.RunEnd(
            status="diverged" if diverged else "ok",
            epochs_completed=epochs,
            train_time_s=train_time_s,
            # The proto's "to the end of the last epoch": what a framework does after its last
            # epoch (Keras' fit returning) is not the run's.
            total_time_s=self._sink.t_s() if diverged else self._last_epoch_end_t_s,
            images_per_s=self._steps_images(train_time_s) * epochs,
            time_to_first_step_s=self._time_to_first_step_s,
            first_step_s=self._first_step_s,
            final_test_accuracy=self._final_test_accuracy,
            energy_method=summary.energy_method,
        )
        if self._step_times_s:
            event.step_time_median_s = statistics.median(self._step_times_s)
            event.step_time_p90_s = quantile(self._step_times_s, 0.9)
        if diverged:
            event.diverged_epoch, event.diverged_first_step, event.diverged_last_step = diverged
        for name, value in (
            ("peak_framework_mem_bytes", peak_framework_mem_bytes),
            ("peak_framework_reserved_bytes", peak_framework_reserved_bytes),
            ("peak_gpu_mem_bytes", summary.peak_gpu_mem_bytes),
            ("mean_gpu_util_pct", summary.mean_gpu_util_pct),
            ("energy_j", summary.energy_j),
        ):
            if value is not None:
                setattr(event, name, value)
        self._emit(run_end=event)

    def _emit(self, **event) -> None:
        self._sink.event(pb.TrainEvent(**event))
