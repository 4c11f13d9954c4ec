"""Validation and defaults of a TrainSpec (and an InspectRequest), shared by every service and the
orchestrator.

One place decides what a valid spec is, so both frameworks refuse the same inputs with the same
words: each error names the field and what it may be. DEFAULTS is the one source of defaults:
`with_defaults` fills only what a request left unset (proto3 `optional` tells unset from 0), so a
value a person set is never replaced, and `validate` then refuses it when it is out of range.
"""

from __future__ import annotations

import math
import re

from fwbench.v1 import trainer_pb2 as pb
from services.common import architectures, numerics, schedule

# The models are architectures.py's, in its order (resnet50, vgg19, mobilenet, mobilenet_v2).
MODELS: tuple[str, ...] = tuple(architectures.ARCHITECTURES)
ARCHITECTURES = ("canonical", "library")
INITS = ("shared", "framework", "pretrained")
SOURCES = ("synthetic", "directory")
AUGMENTS = ("none", "crop-flip")
OPTIMIZERS = ("sgd", "adam", "adamw")
# How optimizer.weight_decay acts in every framework, as torch.optim defines it: an L2 term added
# to the gradient (sgd, adam) or a decoupled shrink of the weights (adamw). Keras' own
# weight_decay is always decoupled, so the TensorFlow service adds the coupled one itself.
WEIGHT_DECAY = {"sgd": "coupled-l2", "adam": "coupled-l2", "adamw": "decoupled"}
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
# native: each framework's own float32 numerics, as it ships (services/common/numerics.py).
PRECISIONS = (numerics.NATIVE, "fp32", "tf32", "bf16", "fp16")
MODES = ("default", "tuned")

# The seed experiment's setting; every field a request leaves unset takes these values. Three
# defaults are not constants and so are not here: model.init follows model.architecture
# (INIT_FOR_ARCHITECTURE), precision follows mode (PRECISION_FOR_MODE), and model.num_classes
# comes from the dataset (services/common/datasets.py).
DEFAULTS = {
    "epochs": 5,
    "batch_size": 32,
    "seed": 0,
    "device": "auto",
    "mode": "default",
    "sample_interval_ms": 100,
    # One device: the run as it always was. More is data parallelism over the same global batch.
    "gpus": 1,
    "model": {"architecture": "canonical"},
    "data": {"source": "synthetic", "augment": "crop-flip"},
    "optimizer": {
        "name": "sgd",
        "learning_rate": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "lr_schedule": "constant",
        "label_smoothing": 0.0,
    },
    "deploy": {"deploy_warmup_iterations": 10, "deploy_timed_iterations": 100},
}
# Shared initial weights exist only for fwbench's own (canonical) definitions.
INIT_FOR_ARCHITECTURE = {"canonical": "shared", "library": "framework"}
# The default mode trains as users of each framework write it first, so in the numerics each
# framework ships with; tuned, as each framework documents its best for float32 training, in
# TF32 (where the device has it: elsewhere no TF32 switch changes any arithmetic).
PRECISION_FOR_MODE = {"default": numerics.NATIVE, "tuned": "tf32"}
# Inspect builds a model without a dataset: its probe batch is synthetic, with synthetic's classes.
INSPECT_DEFAULTS = {"probe_batch_size": 8, "train_steps": 0, "num_classes": 10}

# Inclusive bounds of every integer field. The upper bounds keep one request from occupying a
# service for days or asking for memory no host has; they are far above any sensible run.
BOUNDS = {
    "epochs": (1, 1000),
    # BatchNorm (in every model) cannot train on one sample: PyTorch refuses, Keras divides by a
    # zero variance. A last batch of one sample is refused likewise (schedule.last_batch_of_one).
    "batch_size": (2, 65536),
    "seed": (0, 2**32 - 1),
    "sample_interval_ms": (0, 60_000),
    # The most GPUs one host holds (8 in today's servers) with room to spare; N CPU devices (for
    # testing) are as many processes or logical devices, which a bound keeps countable.
    "gpus": (1, 64),
    "model.num_classes": (1, 100_000),
    "data.train_limit": (1, 10_000_000),
    "data.test_limit": (1, 10_000_000),
    "probe_batch_size": (1, 1024),
    "train_steps": (0, 1000),
    "deploy.deploy_warmup_iterations": (0, 1000),
    "deploy.deploy_timed_iterations": (1, 10_000),
}
# Far above any learning rate or decay that trains, and far below float32's overflow (3.4e38),
# beyond which PyTorch's optimisers raise instead of diverging.
MAX_RATE = 1000.0
MAX_RUN_ID_CHARS = 200
# Linux's limits on a path (PATH_MAX less its terminating NUL) and on each of its names
# (NAME_MAX), in bytes: beyond them every file call fails (ENAMETOOLONG).
MAX_PATH_BYTES = 4095
MAX_NAME_BYTES = 255
# Inspect's budget: its reply carries probe_batch_size x num_classes logits, which the worker
# holds as a tensor, a Python list and a message (~40 bytes each). Both fields in bounds
# (1024 x 100,000) would make a 410 MB reply (over gRPC clients' default 4 MiB) and ~6 GB in the
# worker; 2^19 logits keep the reply within 2 MiB and the worker's copies within ~20 MB.
MAX_PROBE_LOGITS = 1 << 19


class SpecError(ValueError):
    """A spec field is invalid. Maps to INVALID_ARGUMENT; the message names the field."""


def effective_default(path: str) -> object:
    """The default of a dotted field path ("optimizer.learning_rate"), for help texts; model.init,
    precision and model.num_classes, which depend on other things, are described in words."""
    if path == "model.init":
        pairs = INIT_FOR_ARCHITECTURE.items()
        return ", ".join(f"{init} for {arch} models" for arch, init in pairs)
    if path == "model.num_classes":
        return "the dataset's class count"
    if path == "precision":
        return ", ".join(f"{p} in mode {mode}" for mode, p in PRECISION_FOR_MODE.items())
    value: object = DEFAULTS
    for part in path.split("."):
        value = value[part]  # type: ignore[index]
    return value


def with_defaults(spec: pb.TrainSpec) -> pb.TrainSpec:
    """Returns a copy of spec with every unset field given its default; set fields are kept."""
    out = pb.TrainSpec()
    out.CopyFrom(spec)
    _fill(out, DEFAULTS)
    if not out.model.init:
        # An unknown architecture keeps init empty: validate names the architecture.
        out.model.init = INIT_FOR_ARCHITECTURE.get(out.model.architecture, "")
    if not out.precision:
        # An unknown mode keeps precision empty: validate names the mode.
        out.precision = PRECISION_FOR_MODE.get(out.mode, "")
    return out


def inspect_with_defaults(request: pb.InspectRequest) -> pb.InspectRequest:
    out = pb.InspectRequest()
    out.CopyFrom(request)
    out.spec.CopyFrom(with_defaults(request.spec))
    if not out.HasField("probe_batch_size"):
        out.probe_batch_size = INSPECT_DEFAULTS["probe_batch_size"]
    if not out.spec.model.HasField("num_classes"):
        out.spec.model.num_classes = INSPECT_DEFAULTS["num_classes"]
    return out


def _fill(message, defaults: dict) -> None:
    for name, value in defaults.items():
        if isinstance(value, dict):
            _fill(getattr(message, name), value)
            continue
        # Fields with presence (proto3 `optional`) may be set to 0; the others' zero is unset,
        # which is only done for fields whose zero is no valid value (strings) or is the default.
        if message.DESCRIPTOR.fields_by_name[name].has_presence:
            unset = not message.HasField(name)
        else:
            unset = not getattr(message, name)
        if unset:
            setattr(message, name, value)


def _check_weights(spec: pb.TrainSpec) -> None:
    """Pretrained weights and saved ones: canonical models only, a file with its checksum."""
    model = spec.model
    if model.init == "pretrained" and model.architecture == "library":
        if model.weights_file or model.weights_sha256:
            raise SpecError(
                "model.weights_file: library models start from their own library's pretrained "
                "weights (in its cache); leave it empty, or use model.architecture 'canonical'"
            )
    elif model.init == "pretrained":
        if not model.weights_file:
            raise SpecError("model.weights_file: required when model.init is 'pretrained'")
        if not re.fullmatch(r"[0-9a-f]{64}", model.weights_sha256):
            raise SpecError(
                f"model.weights_sha256: 64 lowercase hex digits (the file's sha256) required "
                f"with model.weights_file, got {model.weights_sha256!r}"
            )
    elif model.weights_file or model.weights_sha256:
        raise SpecError(
            f"model.weights_file: only read when model.init is 'pretrained', not {model.init!r}; "
            "leave it empty or set model.init 'pretrained'"
        )
    _path("model.weights_file", model.weights_file)
    if spec.save_weights_dir and model.architecture != "canonical":
        raise SpecError(
            "save_weights_dir: weights are saved in fwbench's canonical layout, which library "
            "models do not have; use model.architecture 'canonical' or leave it empty"
        )
    _path("save_weights_dir", spec.save_weights_dir)


def validate(spec: pb.TrainSpec) -> None:
    """Raises SpecError naming the first invalid field of a defaults-filled spec."""
    if len(spec.run_id) > MAX_RUN_ID_CHARS:
        raise SpecError(f"run_id: at most {MAX_RUN_ID_CHARS} characters, got {len(spec.run_id)}")
    _choice("model.name", spec.model.name, MODELS)
    _choice("model.architecture", spec.model.architecture, ARCHITECTURES)
    _choice("model.init", spec.model.init, INITS)
    if spec.model.architecture == "library" and spec.model.init == "shared":
        raise SpecError(
            "model.init: 'shared' initial weights need model.architecture 'canonical' "
            "(library models differ in layout); use init 'framework' with library models"
        )
    _check_weights(spec)
    if spec.model.HasField("num_classes"):
        _bounded("model.num_classes", spec.model.num_classes)
    _choice("data.source", spec.data.source, SOURCES)
    if spec.data.source == "directory" and not spec.data.data_dir:
        raise SpecError("data.data_dir: required when data.source is 'directory'")
    if spec.data.source != "directory" and spec.data.data_dir:
        raise SpecError(
            f"data.data_dir: only read when data.source is 'directory', not {spec.data.source!r}; "
            "leave it empty or set data.source 'directory'"
        )
    _path("data.data_dir", spec.data.data_dir)
    for limit in ("train_limit", "test_limit"):
        if spec.data.HasField(limit):
            _bounded(f"data.{limit}", getattr(spec.data, limit), unset_means="all samples")
    _choice("data.augment", spec.data.augment, AUGMENTS)
    o = spec.optimizer
    _choice("optimizer.name", o.name, OPTIMIZERS)
    _finite(
        "optimizer.learning_rate",
        o.learning_rate,
        f"in (0, {MAX_RATE:g}]",
        0 < o.learning_rate <= MAX_RATE,
    )
    _finite("optimizer.momentum", o.momentum, "in [0, 1)", 0 <= o.momentum < 1)
    if o.nesterov and o.momentum == 0:
        raise SpecError("optimizer.nesterov: needs optimizer.momentum > 0")
    _finite(
        "optimizer.weight_decay",
        o.weight_decay,
        f"in [0, {MAX_RATE:g}]",
        0 <= o.weight_decay <= MAX_RATE,
    )
    _choice("optimizer.lr_schedule", o.lr_schedule, LR_SCHEDULES)
    _finite("optimizer.label_smoothing", o.label_smoothing, "in [0, 1)", 0 <= o.label_smoothing < 1)
    _bounded("epochs", spec.epochs)
    _bounded("batch_size", spec.batch_size)
    _bounded("seed", spec.seed)
    _choice("device", spec.device, DEVICES)
    # The mode first: an unknown one leaves precision without its default.
    _choice("mode", spec.mode, MODES)
    _choice("precision", spec.precision, PRECISIONS)
    _bounded("sample_interval_ms", spec.sample_interval_ms)
    _bounded("gpus", spec.gpus)
    if spec.batch_size % spec.gpus:
        raise SpecError(
            f"batch_size: {spec.batch_size} is the global batch, split evenly over gpus "
            f"{spec.gpus}, so it must be a multiple of {spec.gpus}; use batch_size "
            f"{schedule.nearest_multiples(spec.batch_size, spec.gpus)}"
        )
    _bounded("deploy.deploy_warmup_iterations", spec.deploy.deploy_warmup_iterations)
    _bounded("deploy.deploy_timed_iterations", spec.deploy.deploy_timed_iterations)
    if spec.HasField("debug"):
        raise SpecError(
            "debug: set only by the DebugProbe service in its own worker (a job with a mistake "
            "injected is never a measured run); leave it unset"
        )


def validate_inspect(request: pb.InspectRequest) -> None:
    """Raises SpecError naming the first invalid field of a defaults-filled InspectRequest."""
    validate(request.spec)
    _bounded("probe_batch_size", request.probe_batch_size)
    _bounded("train_steps", request.train_steps)
    if request.train_steps and request.probe_batch_size < 2:
        raise SpecError(
            "probe_batch_size: training steps need at least 2 probe images (BatchNorm cannot "
            "train on one); use probe_batch_size >= 2 or train_steps 0"
        )
    images, classes = request.probe_batch_size, request.spec.model.num_classes
    if images * classes > MAX_PROBE_LOGITS:
        raise SpecError(
            f"probe_batch_size x model.num_classes: {images} x {classes} = "
            f"{images * classes:,} probe logits ({images * classes * 4 / 1e6:,.1f} MB of reply), "
            f"over Inspect's budget of {MAX_PROBE_LOGITS:,} logits "
            f"({MAX_PROBE_LOGITS * 4 >> 20} MiB); "
            f"use probe_batch_size <= {MAX_PROBE_LOGITS // classes} with {classes} classes"
        )


def _path(field: str, path: str) -> None:
    if "\0" in path:
        raise SpecError(f"{field}: a path may not contain NUL")
    size = len(path.encode())
    if size > MAX_PATH_BYTES:
        raise SpecError(
            f"{field}: a path of at most {MAX_PATH_BYTES} bytes (UTF-8), got {size} bytes"
        )
    for name in path.split("/"):
        size = len(name.encode())
        if size > MAX_NAME_BYTES:
            raise SpecError(
                f"{field}: {name[:20]!r}… is {size} bytes; each name between slashes may have "
                f"at most {MAX_NAME_BYTES} bytes (UTF-8), the file system's limit"
            )


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{field}: {value!r} is not one of {', '.join(allowed)}")


def _bounded(field: str, value: int, unset_means: str = "") -> None:
    low, high = BOUNDS[field]
    if not low <= value <= high:
        hint = f" (leave it unset for {unset_means})" if unset_means and value == 0 else ""
        raise SpecError(f"{field}: must be in {low}..{high}, got {value}{hint}")


def _finite(field: str, value: float, rule: str, holds: bool) -> None:
    if not (math.isfinite(value) and holds):
        raise SpecError(f"{field}: must be a finite number {rule}, got {value}")
