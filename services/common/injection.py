"""Debug probes: common mistakes injected into the same small training job in every framework, and
what each framework then tells its user — framework-free, shared by every service.

A probe is one mistake, written once here (PROBES) as a manipulation of the data, the spec, the
model's spec or the batch's layout, and applied through `Injection`'s hooks:

    inject = injection.Injection(spec)                     a no-op unless spec.debug is set
    dataset = inject.dataset(datasets.load(spec))          labels, pixels  (the harness)
    model = models.build(inject.model_spec(spec.model))    the head        (the harness)
    train_batch = inject.batches(pipeline.train_batch, "NCHW", torch.permute)
                                                           the layout fed to the model

Each hook is called once, when the run is set up (services/common/harness.py, and the trainer for
the layout): a measured run calls nothing of the probes per step. A trainer honours
`inject.eager` (its eager execution mode). The learning rate is a spec manipulation made before
train() is called (`probed_spec`). `run` (in the worker process, DebugProbe's mode) trains the
probed job with `ProbeRecorder` in place of the service's recorder and turns what happened — an
exception, a non-finite loss, or nothing — into a ProbeResult.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from services.common import architectures, frameworks
from services.common.datasets import DataError
from services.common.spec import SpecError

if TYPE_CHECKING:
    from fwbench.v1 import trainer_pb2 as pb
    from services.common.datasets import Dataset

NONE = "none"
EXECUTIONS = ("graph", "eager")
# The message is kept verbatim up to here: enough for the first lines a person reads.
MESSAGE_CHARS = 600
# Multiplies the spec's learning rate: SGD then overshoots so far that the loss overflows within
# a few steps in every framework (0.01 becomes 1e4; the spec's own bound does not apply to it).
DIVERGING_LR_FACTOR = 1e6
# fwbench's own frames in a probed job's traceback: this module's run, and the trainer harness.
HARNESS_FILES = {Path(__file__).resolve(), Path(__file__).resolve().with_name("harness.py")}
SERVICES = frameworks.ROOT / "services"


def _unchanged(value):
    return value


@dataclasses.dataclass(frozen=True)
class Probe:
    name: str
    # What the mistake is, as a person would describe it.
    description: str
    # Regular expressions (of the spec) one of which a helpful error message contains: the
    # offending layer's name, the shape numbers, the bad value or dtype.
    clues: Callable[[pb.TrainSpec], tuple[str, ...]]
    # The mistake, made where it is made; every other hook leaves its value as it is.
    dataset: Callable[[Dataset], Dataset] = _unchanged
    model_spec: Callable[[pb.ModelSpec], pb.ModelSpec] = _unchanged
    learning_rate_factor: float = 1.0
    # The training batch is fed in the layout the model does not take (NHWC for NCHW, and back).
    swaps_layout: bool = False


def _all(*patterns: str) -> str:
    """A regular expression that matches where every one of patterns does, anywhere."""
    return "(?s)" + "".join(f"(?=.*{p})" for p in patterns)


def _head(spec) -> str:
    return architectures.get(spec.model.name, spec.model.num_classes).units[-1].name


def _stem(spec) -> str:
    return architectures.get(spec.model.name, spec.model.num_classes).units[0].name


def _one_class_more(model: pb.ModelSpec) -> pb.ModelSpec:
    out = type(model)()
    out.CopyFrom(model)
    out.num_classes += 1
    return out


def _with_labels(dataset: Dataset, change: Callable[[np.ndarray], np.ndarray]) -> Dataset:
    return dataclasses.replace(
        dataset,
        train_labels=change(np.asarray(dataset.train_labels)),
        test_labels=change(np.asarray(dataset.test_labels)),
    )


def _nan_pixel(dataset: Dataset) -> Dataset:
    images = np.asarray(dataset.train_images, np.float32).copy()
    # The centre survives every crop of the shared schedule (offsets up to 2 * PAD).
    images[:, 16, 16, 0] = np.nan
    return dataclasses.replace(dataset, train_images=images)


PROBES = {
    p.name: p
    for p in (
        Probe(
            "head_classes",
            "the model's head has num_classes + 1 outputs (a head built for another dataset)",
            lambda s: (rf"\b{_head(s)}\b", rf"\b{s.model.num_classes + 1}\b"),
            model_spec=_one_class_more,
        ),
        Probe(
            "float_labels",
            "labels are float32 class numbers instead of integers",
            lambda s: (r"(?i)float",),
            dataset=lambda d: _with_labels(d, lambda labels: labels.astype(np.float32)),
        ),
        Probe(
            "labels_out_of_range",
            "labels count from 1 (1..num_classes): the largest equals num_classes",
            lambda s: (rf"\b{s.model.num_classes}\b", r"(?i)out of (bounds|range)"),
            dataset=lambda d: _with_labels(d, lambda labels: labels + 1),
        ),
        Probe(
            "nan_input",
            "every training image has one NaN pixel (its centre, first channel)",
            lambda s: (r"(?i)\bnan\b",),
            dataset=_nan_pixel,
        ),
        Probe(
            "diverging_lr",
            f"the learning rate is {DIVERGING_LR_FACTOR:g} x the spec's (a typo in an exponent)",
            lambda s: (r"(?i)\b(nan|inf)\b",),
            learning_rate_factor=DIVERGING_LR_FACTOR,
        ),
        Probe(
            "channel_order",
            "the batch is fed in the other layout: NHWC where the model takes NCHW, or NCHW "
            "where it takes NHWC",
            # The numbers of the probe: 32 (the size the model took for channels) and 3.
            lambda s: (rf"\b{_stem(s)}\b", _all(r"\b32\b", r"\b3\b")),
            swaps_layout=True,
        ),
    )
}
NAMES = tuple(PROBES)
# Every measured run: no mistake at all.
NO_PROBE = Probe(NONE, "no mistake", lambda s: ())


def check_request(probes, executions) -> tuple[list[str], list[str]]:
    """The probes and executions of a DebugProbeRequest, defaults filled (all, both); SpecError
    naming an unknown one."""
    for field, given, known in (("probes", probes, NAMES), ("executions", executions, EXECUTIONS)):
        unknown = [name for name in given if name not in known]
        if unknown:
            raise SpecError(
                f"{field}: {', '.join(map(repr, unknown))} not one of {', '.join(known)}"
            )
        if len(set(given)) != len(given):
            raise SpecError(f"{field}: {list(given)} names one twice")
    return list(probes) or list(NAMES), list(executions) or list(EXECUTIONS)


def probed_spec(spec: pb.TrainSpec, probe: str, execution: str) -> pb.TrainSpec:
    """A copy of spec that carries the probe and execution (spec.debug), with the probe's spec
    manipulation made."""
    out = type(spec)()
    out.CopyFrom(spec)
    out.debug.probe, out.debug.execution = probe, execution
    out.optimizer.learning_rate *= PROBES.get(probe, NO_PROBE).learning_rate_factor
    return out


class Injection:
    """The mistake of spec.debug, applied where a trainer calls these hooks. Without spec.debug
    (every measured run) each hook returns what it was given."""

    def __init__(self, spec: pb.TrainSpec):
        self.probe = PROBES.get(spec.debug.probe, NO_PROBE)
        self.eager = spec.debug.execution == "eager"

    def dataset(self, dataset: Dataset) -> Dataset:
        return self.probe.dataset(dataset)

    def model_spec(self, model: pb.ModelSpec) -> pb.ModelSpec:
        return self.probe.model_spec(model)

    def batches(self, train_batch: Callable, layout: str, transpose: Callable) -> Callable:
        """The function that makes a training batch as the model receives it, from
        `train_batch(...) -> (images, labels)`: `layout` (NCHW or NHWC) is what the model takes,
        `transpose(images, permutation)` the framework's own transpose. Without the layout probe
        it is train_batch itself, so that a measured loop calls nothing of the probes per step."""
        if not self.probe.swaps_layout:
            return train_batch
        permutation = (0, 2, 3, 1) if layout == "NCHW" else (0, 3, 1, 2)

        def swapped(*args):
            images, labels = train_batch(*args)
            return transpose(images, permutation), labels

        return swapped


class ProbeRecorder:
    """The recorder's hooks (services/common/recorder.py) for a probed job. Every step reports
    (and so synchronises the device after every step, in both execution modes alike): the first
    non-finite loss is found at its own step, and stops training as the recorder's divergence
    does."""

    def __init__(self):
        self.steps_run = 0
        self.step_times_s: list[float] = []
        self.last_loss: float | None = None
        self.nonfinite_at: float | None = None
        self.settings: dict[str, str] = {}
        self._steps_per_epoch = 0

    @property
    def diverged(self) -> bool:
        return self.nonfinite_at is not None

    def run_started(self, *, steps_per_epoch: int, settings: dict[str, str], **_) -> None:
        self._steps_per_epoch = steps_per_epoch
        self.settings = settings

    def train_begin(self) -> None:
        self._mark = time.perf_counter()

    def step_end(self, epoch: int, step: int) -> bool:
        return True

    def progress(self, epoch: int, step: int, loss: float) -> None:
        now = time.perf_counter()
        done = epoch * self._steps_per_epoch + step
        window = done - self.steps_run
        if not math.isfinite(loss):
            # The failing step is not counted as run: steps_run is what completed sanely.
            self.nonfinite_at = now
            return
        self.step_times_s += [(now - self._mark) / window] * window
        self.steps_run, self.last_loss, self._mark = done, loss, now

    def epoch_end(self, epoch: int, **_) -> None:
        # Evaluation is not a training step.
        self._mark = time.perf_counter()

    def run_end(self, **_) -> None:
        pass


def run(trainer, framework: str, spec: pb.TrainSpec, import_s: float) -> pb.ProbeResult:
    """Trains spec (already probed: `probed_spec`) with a ProbeRecorder; what happened, as a
    ProbeResult. Runs in the worker process, which has imported the framework."""
    from fwbench.v1 import trainer_pb2 as pb

    recorder = ProbeRecorder()
    error: BaseException | None = None
    start = time.perf_counter()
    try:
        trainer.train(spec, recorder)
    except (SpecError, DataError):
        raise  # the request is wrong (a device, the data), not the probed job: the call fails
    except Exception as e:
        error = e
        # The whole traceback, as a person would see it, goes to the service's log.
        traceback.print_exc()
    end = time.perf_counter()
    probe = spec.debug.probe
    result = pb.ProbeResult(
        framework=framework,
        probe=probe,
        execution=spec.debug.execution,
        execution_detail=recorder.settings.get("execution", ""),
        steps_run=recorder.steps_run,
        steps_planned=recorder._steps_per_epoch * spec.epochs,
        import_s=import_s,
    )
    if error is not None:
        result.outcome = "error"
        result.outcome_after_s = end - start
        result.exception_type = _type_name(error)
        full_message = str(error) or type(error).__name__
        result.message = full_message[:MESSAGE_CHARS]
        clues = PROBES[probe].clues(spec) if probe in PROBES else ()
        result.clues = " | ".join(clues)
        result.message_names_culprit = any(re.search(c, full_message) for c in clues)
        facts = traceback_facts(error, framework)
        result.traceback_frames = facts.frames
        result.framework_frame_fraction = facts.framework_fraction
        result.user_frame = facts.user_frame
        result.traceback_has_user_line = facts.has_user_line
    elif recorder.diverged:
        result.outcome = "nan"
        result.outcome_after_s = recorder.nonfinite_at - start
    else:
        result.outcome = "ok" if probe == NONE else "silent"
        result.outcome_after_s = end - start
    if len(recorder.step_times_s) >= 2:
        result.step_time_median_s = statistics.median(recorder.step_times_s[1:])
    if recorder.step_times_s:
        result.first_step_s = recorder.step_times_s[0]
    if recorder.last_loss is not None:
        result.last_loss = recorder.last_loss
    return result


def _type_name(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


@dataclasses.dataclass(frozen=True)
class TracebackFacts:
    frames: int
    framework_fraction: float
    user_frame: str
    has_user_line: bool


def traceback_facts(error: BaseException, framework: str) -> TracebackFacts:
    """How the traceback a person would read looks: every frame of the exception and of those
    chained to it, as a script would show them (as_written); which lie in the framework's
    packages; and the innermost frame of the user's own code (services/<framework>/) beyond the
    entry. TensorFlow also writes the Python stack where a failing graph op was defined into its
    message: a user file named there counts as a user line."""
    packages = set(frameworks.get(framework).packages)
    user_dir = SERVICES / framework
    frames: list[traceback.FrameSummary] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__) + frames
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    frames, entry = as_written(frames, user_dir)
    in_framework = sum(_package(f.filename) in packages for f in frames)
    user = [f for f in frames if _inside(f.filename, user_dir)]
    beyond_entry = [f for f in user if f is not entry]
    chosen = (beyond_entry or user)[-1:] if user else []
    user_frame = ""
    if chosen:
        f = chosen[0]
        relative = Path(f.filename).resolve().relative_to(frameworks.ROOT)
        user_frame = f"{relative}:{f.lineno} in {f.name}: {(f.line or '').strip()}"
    has_user_line = bool(beyond_entry)
    named = re.search(rf'File "[^"]*services/{framework}/(\w+\.py)", line (\d+)', str(error))
    if not has_user_line and named:
        has_user_line = True
        user_frame = f"services/{framework}/{named[1]}:{named[2]} (named in the message)"
    return TracebackFacts(
        frames=len(frames),
        framework_fraction=in_framework / len(frames) if frames else 0.0,
        user_frame=user_frame,
        has_user_line=has_user_line,
    )


def as_written(
    frames: list[traceback.FrameSummary], user_dir: Path
) -> tuple[list[traceback.FrameSummary], traceback.FrameSummary | None]:
    """A probed job's frames as a user's training script would show them, and its entry frame.

    The script's own main function is the trainer's: its `train`, and the methods of its Run and
    Loop that the harness calls (fit, train_steps, evaluate, ...), which a user writes as one
    function. fwbench's own frames (HARNESS_FILES) are left out, and those trainer frames are one
    entry frame, the innermost of them: where that function was when the error came."""
    kept: list[traceback.FrameSummary] = []
    entry: traceback.FrameSummary | None = None
    called_by_harness = False
    for frame in frames:
        if Path(frame.filename).resolve() in HARNESS_FILES:
            called_by_harness = True
            continue
        if called_by_harness and _inside(frame.filename, user_dir):
            kept = [f for f in kept if f is not entry]
            entry = frame
        kept.append(frame)
        called_by_harness = False
    return kept, entry


def _package(filename: str) -> str:
    """The top-level package an installed file belongs to ("" when it is not installed)."""
    parts = Path(filename).parts
    for i, part in enumerate(parts[:-1]):
        if part in ("site-packages", "dist-packages"):
            return parts[i + 1].removesuffix(".py")
    return ""


def _inside(filename: str, folder: Path) -> bool:
    try:
        Path(filename).resolve().relative_to(folder)
    except ValueError:
        return False
    return True
