"""Validation and defaults of a TrainSpec, shared by every service (and the orchestrator).

One place decides what a valid spec is, so both frameworks refuse the same inputs with the same
words: each error names the field and what it may be.
"""

from __future__ import annotations

from fwbench.v1 import trainer_pb2 as pb

MODELS = ("resnet50", "vgg19", "mobilenet", "mobilenet_v2")
ARCHITECTURES = ("canonical", "library")
INITS = ("shared", "framework")
SOURCES = ("synthetic", "directory")
AUGMENTS = ("none", "crop-flip")
OPTIMIZERS = ("sgd", "adam", "adamw")
# How optimizer.weight_decay acts in every framework, as torch.optim defines it: an L2 term added
# to the gradient (sgd, adam) or a decoupled shrink of the weights (adamw). Keras' own
# weight_decay is always decoupled, so the TensorFlow service adds the coupled one itself.
WEIGHT_DECAY = {"sgd": "coupled-l2", "adam": "coupled-l2", "adamw": "decoupled"}
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
MODES = ("default", "tuned")

# The seed experiment's setting: the one source of every default, for the services, the CLI (its
# --help shows these) and any other client. A field not set in a request takes its value here.
# model.init has none: it follows model.architecture (INIT_FOR_ARCHITECTURE).
DEFAULTS = {
    "epochs": 5,
    "batch_size": 32,
    "seed": 0,
    "device": "auto",
    "precision": "fp32",
    "mode": "default",
    "compile": False,
    "cudnn_benchmark": False,
    "sample_interval_ms": 100,
    "model": {"architecture": "canonical", "num_classes": 10},
    "data": {"source": "synthetic", "train_limit": 0, "test_limit": 0, "augment": "crop-flip"},
    "optimizer": {
        "name": "sgd",
        "learning_rate": 0.01,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 0.0,
        "lr_schedule": "constant",
        "label_smoothing": 0.0,
    },
}
# Shared initial weights exist only for fwbench's canonical models; library models have their own
# layouts, so they start from each framework's own initialisers.
INIT_FOR_ARCHITECTURE = {"canonical": "shared", "library": "framework"}


def default_of(field: str):
    """The default of a dotted spec field, e.g. default_of("optimizer.learning_rate")."""
    value = DEFAULTS
    for part in field.split("."):
        value = value[part]
    return value


class SpecError(ValueError):
    """A spec field is invalid. Maps to INVALID_ARGUMENT; the message names the field."""


def with_defaults(spec: pb.TrainSpec) -> pb.TrainSpec:
    """Returns a copy of spec with every unset (zero/empty) field given its default."""
    out = pb.TrainSpec()
    out.CopyFrom(spec)
    _fill(out, DEFAULTS)
    if not out.model.init:
        out.model.init = INIT_FOR_ARCHITECTURE.get(out.model.architecture, "")
    return out


def _fill(message, defaults: dict) -> None:
    for name, value in defaults.items():
        if isinstance(value, dict):
            _fill(getattr(message, name), value)
            continue
        # Fields with presence (proto3 `optional`) may legitimately be 0, e.g. momentum.
        if message.DESCRIPTOR.fields_by_name[name].has_presence:
            unset = not message.HasField(name)
        else:
            unset = not getattr(message, name)
        if unset:
            setattr(message, name, value)


# Upper bounds: far above any real job, low enough that a typo cannot hold a service for days.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_SAMPLES = 10_000_000
MAX_CLASSES = 100_000
MAX_LEARNING_RATE = 100.0
MAX_WEIGHT_DECAY = 1.0
MAX_SAMPLE_INTERVAL_MS = 60_000
MAX_PROBE_BATCH_SIZE = 1024
MAX_INSPECT_STEPS = 1000


def validate(spec: pb.TrainSpec) -> None:
    """Raises SpecError naming the first invalid field of a defaults-filled spec."""
    _choice("model.name", spec.model.name, MODELS)
    _choice("model.architecture", spec.model.architecture, ARCHITECTURES)
    _choice("model.init", spec.model.init, INITS)
    if spec.model.architecture == "library" and spec.model.init == "shared":
        raise SpecError(
            "model.init: 'shared' initial weights need model.architecture 'canonical' "
            "(library models differ in layout); use init 'framework' with library models"
        )
    _within("model.num_classes", spec.model.num_classes, 2, MAX_CLASSES)
    _choice("data.source", spec.data.source, SOURCES)
    if spec.data.source == "directory" and not spec.data.data_dir:
        raise SpecError("data.data_dir: required when data.source is 'directory'")
    _within("data.train_limit", spec.data.train_limit, 0, MAX_SAMPLES)
    _within("data.test_limit", spec.data.test_limit, 0, MAX_SAMPLES)
    _choice("data.augment", spec.data.augment, AUGMENTS)
    _choice("optimizer.name", spec.optimizer.name, OPTIMIZERS)
    # NaN fails every comparison, so each check is written as "inside", never "not outside".
    if not 0 < spec.optimizer.learning_rate <= MAX_LEARNING_RATE:
        raise SpecError(
            f"optimizer.learning_rate: must be > 0 and <= {MAX_LEARNING_RATE:g}, "
            f"got {spec.optimizer.learning_rate}"
        )
    if not 0 <= spec.optimizer.momentum < 1:
        raise SpecError(f"optimizer.momentum: must be in [0, 1), got {spec.optimizer.momentum}")
    if spec.optimizer.nesterov and spec.optimizer.momentum == 0:
        raise SpecError("optimizer.nesterov: needs optimizer.momentum > 0")
    _within("optimizer.weight_decay", spec.optimizer.weight_decay, 0, MAX_WEIGHT_DECAY)
    _choice("optimizer.lr_schedule", spec.optimizer.lr_schedule, LR_SCHEDULES)
    if not 0 <= spec.optimizer.label_smoothing < 1:
        raise SpecError(
            f"optimizer.label_smoothing: must be in [0, 1), got {spec.optimizer.label_smoothing}"
        )
    _within("epochs", spec.epochs, 1, MAX_EPOCHS)
    _within("batch_size", spec.batch_size, 1, MAX_BATCH_SIZE)
    _choice("device", spec.device, DEVICES)
    _choice("precision", spec.precision, PRECISIONS)
    _choice("mode", spec.mode, MODES)
    _within("sample_interval_ms", spec.sample_interval_ms, 0, MAX_SAMPLE_INTERVAL_MS)


def validate_inspect(probe_batch_size: int, train_steps: int) -> None:
    """Raises SpecError for an InspectRequest's own fields."""
    _within("probe_batch_size", probe_batch_size, 1, MAX_PROBE_BATCH_SIZE)
    _within("train_steps", train_steps, 0, MAX_INSPECT_STEPS)


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{field}: {value!r} is not one of {', '.join(allowed)}")


def _within(field: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise SpecError(f"{field}: must be in [{low:g}, {high:g}], got {value}")
