"""Steady state in the report: GPU busy, power and energy per image over steady-state windows with
the first step, evaluation and stalls apart (orchestrator/report/phases.py), and each framework's
regime (orchestrator/report/regime.py). The result sets are written by the real ResultsWriter
from TrainEvents laid out as the recorder sends them; no framework runs, so these belong to the
fast tier."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import report
from orchestrator.report import regime
from orchestrator.results import journal, schema
from services.common import steady
from services.common.recorder import PROGRESS_INTERVAL_S, median_and_p90
from tests.conftest import tiny_spec

H200 = "NVIDIA H200"
BATCH = 32
START_S = 3.0  # import, data and build: the worker's first seconds


@dataclasses.dataclass
class Job:
    """One run as a trainer and the recorder would report it: the first call (compilation), then
    windows of PROGRESS_INTERVAL_S, each epoch's evaluation and the time between epochs, and a
    telemetry sample every 0.1 s whose GPU busy is that of the phase it falls in."""

    framework: str
    step_s: float
    model: str = "mobilenet_v2"
    mode: str = "tuned"
    repeat: int = 0
    gpu: bool = True
    epochs: int = 2
    steps_per_epoch: int = 1563
    first_step_s: float = 6.0
    eval_s: float = 1.5
    between_epochs_s: float = 0.4
    busy_pct: dict = dataclasses.field(default_factory=dict)  # phase -> % (else 0)
    cpu_pct: float = 400.0
    # (epoch, window number from 0) -> how many times slower than step_s its steps ran.
    stalls: dict = dataclasses.field(default_factory=dict)
    stall_cpu_pct: float = 100.0
    # Each later window's step varies by this relative standard deviation (seeded, normal): the
    # spread a real run's windows have.
    window_noise: float = 0.0
    noise_seed: int = 0
    # RunStarted.settings: what the service resolved the spec to.
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def run(self) -> dict:
        return {
            "run_id": f"{self.model}-{self.framework}-{self.mode}-r{self.repeat}",
            "framework": self.framework,
            "model": self.model,
            "repeat": self.repeat,
        }

    def write(self, writer: journal.ResultsWriter) -> None:
        spec = tiny_spec(
            self.model,
            run_id=self.run["run_id"],
            epochs=self.epochs,
            batch_size=BATCH,
            device="cuda" if self.gpu else "cpu",
            mode=self.mode,
            # Strict fp32, as the runs and the floors below (tuned alone would be tf32).
            precision="fp32",
            data__train_limit=self.steps_per_epoch * BATCH,
        )
        writer.run_begins(self.run, spec)
        events, phases, steady_steps_s = self._training()
        started = pb.RunStarted(
            run_id=self.run["run_id"],
            framework=self.framework,
            device_name=H200 if self.gpu else "cpu",
            gpu=H200 if self.gpu else "none",
            train_samples=self.steps_per_epoch * BATCH,
            test_samples=1000,
            steps_per_epoch=self.steps_per_epoch,
            settings=self.settings,
        )
        samples = self._samples(phases, events[-1].t_s)
        median_s, p90_s = median_and_p90(steady_steps_s)
        end = pb.RunEnd(
            epochs_completed=self.epochs,
            train_time_s=sum(e.epoch_end.train_time_s for e in events if e.HasField("epoch_end")),
            total_time_s=events[-1].t_s,
            time_to_first_step_s=START_S + self.first_step_s,
            first_step_s=self.first_step_s,
            step_time_median_s=median_s,
            step_time_p90_s=p90_s,
            energy_method="counter" if self.gpu else "none",
            status="ok",
        )
        if self.gpu:
            end.mean_gpu_util_pct = sum(s.gpu_util_pct for s in samples) / len(samples)
            end.energy_j = samples[-1].energy_j
        stream = [pb.TrainEvent(t_s=START_S, run_started=started), *events]
        stream.append(
            pb.TrainEvent(t_s=end.total_time_s, telemetry=pb.TelemetryBatch(samples=samples))
        )
        stream.append(pb.TrainEvent(t_s=end.total_time_s, run_end=end))
        for event in stream:
            writer.event(self.run, event)
        outcome = journal.RunOutcome(started=started, end=end)
        writer.run_finished(self.run, spec, outcome)

    def _training(self):
        """The Progress and EpochEnd events, (start, end, phase) of every stretch of time, and
        the steps the recorder times (a steady window's step, once per step)."""
        t = START_S
        # The service's baseline, evaluated before the first step, on no training clock.
        baseline = pb.EpochEnd(epoch=0, before_training=True, test_accuracy=0.1)
        events, phases, steady_steps_s = [pb.TrainEvent(t_s=t, epoch_end=baseline)], [], []
        window_steps = max(1, round(PROGRESS_INTERVAL_S / self.step_s))
        noise = np.random.default_rng(self.noise_seed)
        for epoch in range(self.epochs):
            epoch_start = t
            if epoch:
                phases.append((t, t + self.between_epochs_s, "between epochs"))
                epoch_start = t + self.between_epochs_s
            window_open, last, number = t, 0, 0
            ends = [1] if epoch == 0 else []
            ends += list(range(last + window_steps, self.steps_per_epoch, window_steps))
            ends = sorted({*ends, self.steps_per_epoch})
            clock = epoch_start
            for end in ends:
                steps = end - last
                first_call = epoch == 0 and last == 0
                slow = self.stalls.get((epoch, number), 1.0)
                jitter = 1 + self.window_noise * noise.standard_normal()
                took = self.first_step_s if first_call else steps * self.step_s * slow * jitter
                phase = (
                    "first step"
                    if first_call
                    else "stalled"
                    if slow > 1
                    else "steady"
                    if steady.is_steady(epoch, last + 1, False, self.epochs)
                    else "warm-up"
                )
                phases.append((clock, clock + took, phase))
                clock += took
                event = pb.TrainEvent(
                    t_s=clock,
                    progress=pb.Progress(
                        epoch=epoch,
                        step=end,
                        steps_per_epoch=self.steps_per_epoch,
                        loss=2.0,
                        images_per_s=steps * BATCH / (clock - window_open),
                    ),
                )
                if steady.is_steady(epoch, last + 1, first_call, self.epochs):
                    steady_steps_s += [took / steps] * steps
                events.append(event)
                window_open, last, number = clock, end, number + 1
            train_time_s = clock - epoch_start
            phases.append((clock, clock + self.eval_s, "evaluation"))
            clock += self.eval_s
            events.append(
                pb.TrainEvent(
                    t_s=clock,
                    epoch_end=pb.EpochEnd(
                        epoch=epoch + 1,
                        test_accuracy=0.5,
                        train_time_s=train_time_s,
                        eval_time_s=self.eval_s,
                        epoch_time_s=clock - t,
                        between_epoch_overhead_s=clock - t - train_time_s - self.eval_s,
                    ),
                )
            )
            t = clock
        return events, phases, steady_steps_s

    def _samples(self, phases, end_s: float) -> list[pb.TelemetrySample]:
        samples, energy_j = [], 0.0
        for i in range(int(START_S * 10) + 1, int(end_s * 10) + 1):
            t = i / 10
            phase = next((p for start, end, p in phases if start < t <= end), None)
            busy = self.busy_pct.get(phase, 0.0)
            cpu = self.stall_cpu_pct if phase == "stalled" else self.cpu_pct
            sample = pb.TelemetrySample(t_s=t, rss_bytes=2**30, cpu_pct=cpu)
            if self.gpu:
                power_w = 100 + 3 * busy
                energy_j += power_w * 0.1
                sample.gpu_util_pct, sample.power_w, sample.energy_j = busy, power_w, energy_j
            samples.append(sample)
        return samples


def result_set(tmp_path: Path, jobs: list[Job], floor: list[dict] = ()) -> Path:
    out = tmp_path / "results"
    writer = journal.ResultsWriter(out)
    writer.write_context({"frameworks": list(dict.fromkeys(j.framework for j in jobs))})
    for job in jobs:
        job.write(writer)
    writer.close()
    if floor:
        pd.DataFrame(floor, columns=schema.FLOOR_COLUMNS).to_csv(
            out / schema.FLOOR_CSV, index=False
        )
    return out


def floor_row(framework: str, step_ms: float, device: str = H200) -> dict:
    return {
        "framework": framework,
        "model": "mobilenet_v2",
        "batch_size": BATCH,
        "precision": "fp32",
        "device_name": device,
        "step_ms_median": step_ms,
        "step_ms_p90": step_ms * 1.01,
        "method": "whole step, fastest",
    }


def rendered(directory: Path) -> tuple[report.Report, str]:
    result = report.render(directory, directory / "report")
    return result, result.markdown_path.read_text()


def whole_run_busy_pct(directory: Path, framework: str) -> float:
    runs = pd.read_csv(directory / schema.RUNS_CSV)
    return float(runs.loc[runs.framework == framework, "mean_gpu_util_pct"].iloc[0])


# The tuned MobileNetV2 of the issue: PyTorch's whole step in a CUDA graph at its floor, the GPU
# busy 99 % in steady state but idle through a 6 s first step and busy 30 % in evaluation, so its
# whole-run average is near 54 %; TensorFlow tuned yet 2.5× its floor, the GPU busy 40 %.
AT_FLOOR = Job(
    "pytorch",
    step_s=0.00311,
    busy_pct={"steady": 99.0, "warm-up": 90.0, "first step": 5.0, "evaluation": 30.0},
)
ABOVE_FLOOR = Job(
    "tensorflow",
    step_s=0.0075,
    first_step_s=9.0,
    busy_pct={"steady": 40.0, "warm-up": 40.0, "first step": 5.0, "evaluation": 30.0},
)
FLOORS = [floor_row("pytorch", 3.08), floor_row("tensorflow", 3.0)]


@pytest.fixture(scope="module")
def tuned_set(tmp_path_factory) -> Path:
    return result_set(tmp_path_factory.mktemp("tuned"), [AT_FLOOR, ABOVE_FLOOR], FLOORS)


@pytest.fixture(scope="module")
def tuned(tuned_set):
    return rendered(tuned_set)


def test_a_tuned_step_at_its_floor_is_device_bound_though_its_whole_run_busy_is_low(
    tuned_set, tuned
):
    result, markdown = tuned
    assert 50 < whole_run_busy_pct(tuned_set, "pytorch") < 60  # once called "launch-bound"
    assert "launch-bound" not in markdown
    warnings = [line for line in result.verdict[1:] if "bound" in line]
    assert not any("PyTorch" in line for line in warnings)
    assert (
        "PyTorch device-bound (step 1.01× its floor, GPU busy 99 % in steady state)"
        in (result.verdict[0])
    )


def test_busy_power_and_energy_per_image_are_for_steady_state_with_the_other_phases_apart(tuned):
    _, markdown = tuned
    assert "| GPU busy, steady state (NVML) | 99.0 % | 40.0 % |" in markdown
    # 397 W (100 + 3 × 99 %) for 3.11 ms per 32 images: 38.6 J per 1,000 images.
    assert "| GPU power, steady state | 397 W | 220 W |" in markdown
    assert "| GPU energy per 1,000 training images, steady state | 38.6 J | 51.6 J |" in markdown
    rows = {
        tuple(cells[:2]): cells[2:]
        for line in markdown.splitlines()
        if line.startswith("| ") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    first = rows[("first step (tracing or compilation included)", "PyTorch")]
    assert first[:3] == ["1", "6.00 s", "32"] and first[3] == "5.0 %"
    evaluation = rows[("evaluation", "PyTorch")]
    assert evaluation[:2] == ["1", "3.00 s"] and evaluation[3] == "30.0 %"
    between = rows[("between epochs", "PyTorch")]
    assert between[1] == "0.400 s" and between[3] == "0 %"
    assert steady.DEFINITION in markdown


def test_a_tuned_pytorch_gpu_run_is_said_to_evaluate_eagerly_beside_its_graphed_step(tuned):
    _, markdown = tuned
    assert "### Notes on the modes" in markdown
    assert "evaluation runs the model eagerly, one forward per test batch" in markdown
    assert "Evaluation time, the time between epochs and the total time are not at" in markdown


def test_advice_to_a_host_bound_tuned_run_never_says_use_the_tuned_mode(tuned):
    result, markdown = tuned
    assert "--mode tuned" not in markdown
    (host_bound,) = [line for line in result.verdict if ": host-bound: " in line]
    assert host_bound.startswith(
        "mobilenet_v2 (tuned): host-bound: TensorFlow (step 2.50× its floor, GPU busy 40 % in "
        "steady state)."
    )
    assert "tuned already takes off the host what the framework can" in host_bound


def test_the_floor_section_names_each_rows_regime_from_steady_state_busy(tuned):
    _, markdown = tuned
    section = markdown.split("## Against the hardware floor")[1]
    assert (
        "| mobilenet_v2 | PyTorch | tuned | 1 | 3.11 ms | 3.08 ms | 1.01× | 99 % | device-bound |"
        in section
    )
    assert (
        "| mobilenet_v2 | TensorFlow | tuned | 1 | 7.50 ms | 3.00 ms | 2.50× | 40 % | host-bound |"
        in section
    )


def test_a_stalled_epoch_is_counted_shown_and_left_out_of_steady_state(tmp_path):
    # As the PyTorch epoch: two windows ran 9× slower (the epoch took 6.7 s against
    # 2.7 s) while the worker got one core; the GPU waited (busy 10 %).
    stalled = Job(
        "pytorch",
        mode="default",
        step_s=0.009,
        steps_per_epoch=300,
        first_step_s=1.0,
        stalls={(1, 3): 9.0, (1, 4): 9.0},
        busy_pct={"steady": 80.0, "warm-up": 80.0, "stalled": 10.0},
    )
    result, markdown = rendered(result_set(tmp_path, [stalled]))
    (warning,) = [line for line in result.verdict if "interference" in line]
    assert warning.startswith(
        "mobilenet_v2 (default): interference: PyTorch had 2 stalled window(s), each step over "
        "3× its run's median (4.5 s in all; repeat 1)"
    )
    assert "Training time, total time and time to target include them" in warning
    row = next(line for line in markdown.splitlines() if line.startswith("| stalled windows"))
    # 2 windows of 28 steps at 81 ms: 4.54 s and 1,792 images, at 130 W (100 + 3 × 10 %).
    assert row.endswith(
        "| PyTorch | 1 | 4.54 s | 1,792 | 10.0 % | 130 W | 0.590 kJ | 329 J | 100.0 % |"
    )
    assert "| GPU busy, steady state (NVML) | 80.0 % |" in markdown
    chart = next(line for line in markdown.splitlines() if "Step time per window" in line)
    assert "× marks a stalled window (step over 3× the run's median): 2 here." in chart


def test_the_first_epochs_compilations_are_warm_up_not_interference(tmp_path):
    # As tuned JAX on an H200: epoch 1's last windows compile the remainder's program and the
    # short last batch's (28 s), and PyTorch captures the short batch's CUDA graph: in a run of
    # several epochs that is warm-up, never "something else held the machine".
    compiling = Job(
        "jax",
        step_s=0.004,
        stalls={(0, 18): 50.0},
        busy_pct={"steady": 90.0, "warm-up": 90.0, "stalled": 5.0},
    )
    result, markdown = rendered(result_set(tmp_path, [compiling]))
    assert not [line for line in result.verdict if "interference" in line]
    assert not [line for line in markdown.splitlines() if line.startswith("| stalled windows")]
    assert "| GPU busy, steady state (NVML) | 90.0 % |" in markdown


def test_only_a_window_of_several_steps_can_be_stalled_and_one_epoch_warms_up_in_steps():
    # An epoch's first step or its short last batch alone: a synchronisation and a dispatch.
    assert not steady.is_stalled(0.016, 1, median_step_s=0.004)
    assert steady.is_stalled(0.016, steady.STALL_MIN_STEPS, median_step_s=0.004)
    assert not steady.is_stalled(0.011, 100, median_step_s=0.004)
    # Several epochs: the first is warm-up, the later ones steady from their first window.
    assert not steady.is_steady(0, 500, first_call=False, epochs=2)
    assert steady.is_steady(1, 1, first_call=False, epochs=2)
    # One epoch: the first call and the first WARMUP_STEPS steps are warm-up.
    assert not steady.is_steady(0, steady.WARMUP_STEPS, first_call=False, epochs=1)
    assert steady.is_steady(0, steady.WARMUP_STEPS + 1, first_call=False, epochs=1)
    assert not steady.is_steady(0, 1, first_call=True, epochs=1)


def test_a_step_a_fifth_over_its_floor_with_the_gpu_waiting_is_host_bound_not_device_bound():
    # Tuned JAX's MobileNetV2 on an H200: 3.88 ms against its floor of 3.20, GPU busy 78 %.
    assert str(regime.judge(1.21, 78.0, gpu=True)) == (
        "host-bound (step 1.21× its floor, GPU busy 78 % in steady state)"
    )
    # Its ResNet50, 3.89 against 3.55: within a tenth of the floor.
    assert regime.judge(1.10, 85.0, gpu=True).kind == regime.DEVICE
    # Over the floor with the GPU saturated: the kernels, not the host.
    assert regime.judge(1.3, 97.0, gpu=True).kind == regime.DEVICE


def test_without_a_floor_or_a_gpu_the_regime_is_said_unknown_and_a_cpu_floor_is_used(tmp_path):
    jobs = [
        Job("pytorch", mode="default", gpu=False, step_s=0.076, steps_per_epoch=40),
        Job("jax", mode="default", gpu=False, step_s=0.06, steps_per_epoch=40),
    ]
    result, markdown = rendered(result_set(tmp_path, jobs, [floor_row("pytorch", 72.0, "cpu")]))
    assert "PyTorch device-bound (step 1.06× its floor)" in result.verdict[0]
    assert "JAX regime unknown: no floor measured and no GPU" in result.verdict[0]
    assert "host-bound" not in " ".join(result.verdict)
    assert "| GPU busy, steady state (NVML)" not in markdown


def test_a_result_set_without_progress_events_says_its_phases_are_not_recorded(tmp_path):
    # The canned CPU set's journal holds only its runs' RunStarted: nothing is guessed.
    result = report.render(Path(__file__).parent / "data" / "report" / "cpu", tmp_path)
    markdown = result.markdown_path.read_text()
    assert "Not recorded for these runs (events.jsonl holds none of their progress events)" in (
        markdown
    )
    assert "PyTorch regime unknown: no floor measured and no GPU" in result.verdict[0]
    assert "Step time per window" not in result.html_path.read_text()


def test_a_journal_cut_mid_line_by_a_crash_still_reports_what_it_holds(tmp_path):
    directory = result_set(tmp_path, [dataclasses.replace(AT_FLOOR, mode="default")])
    events = directory / schema.EVENTS_JSONL
    progress = next(line for line in events.read_text().splitlines() if '"progress"' in line)
    with events.open("a") as journal_file:
        journal_file.write(progress[:60])  # killed while writing the next run's progress
    _, markdown = rendered(directory)
    assert "| GPU busy, steady state (NVML) | 99.0 % |" in markdown
