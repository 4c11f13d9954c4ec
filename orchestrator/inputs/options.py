"""From what a person typed (command line or suite file) to the TrainSpec every framework gets.

One table, SPEC_OPTIONS, says which option sets which TrainSpec field. Its argparse options
default to None ("not given"), so that:
- a value a person set always reaches the spec, and an unset one takes the default of
  services/common/spec.py (DEFAULTS, the single source), filled by `spec.with_defaults`;
- `--help` shows those same defaults, read from DEFAULTS rather than written twice;
- a suite file's values and the command line's are merged by "given or not"
  (orchestrator/inputs/suite_file.py).

One function, `spec_from_values`, makes the spec from a mapping of option values (the options'
dests: batch_size for --batch-size): the command line's (`build_spec`: the argparse Namespace as a
mapping) and a suite file's alike. A suite's values, written as data, are checked and converted by
`option_value` with the same types and choices as the command line's, without passing through
argv.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.data import preparation
from orchestrator.errors import UserError
from services.common import datasets, frameworks, injection, schedule, security, weights
from services.common import spec as specs

# What --dataset means when it is not given: the only source that needs nothing on disk.
DEFAULT_DATASET = "synthetic"
# Where --tls-ca and --token-file come from when not given.
TLS_CA_ENV = security.TLS_CA_ENV
TOKEN_FILE_ENV = "FWBENCH_TOKEN_FILE"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _whole_number(value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= {minimum}, got {value!r}"
        ) from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
    return number


def positive_int(value: str) -> int:
    return _whole_number(value, 1)


def non_negative_int(value: str) -> int:
    return _whole_number(value, 0)


def csv_choice(allowed: tuple[str, ...], what: str) -> Callable[[str], list[str]]:
    """An argparse type for comma-separated names out of `allowed`."""

    def parse(value: str) -> list[str]:
        return names_value([v.strip() for v in value.split(",") if v.strip()], allowed, what)

    return parse


class OptionError(argparse.ArgumentTypeError):
    """A value does not fit its option; the message says why (the caller says where). An
    ArgumentTypeError, so that argparse reports it as it reports its own."""


def names_value(items: list, allowed: tuple[str, ...], what: str) -> list[str]:
    """A list of names out of `allowed`, each named once (--frameworks a,b; a suite's lists)."""
    bad = [str(v) for v in items if v not in allowed]
    if bad or not items:
        raise OptionError(
            f"{what} {', '.join(bad) or '(none)'} not known; choose from {', '.join(allowed)}"
        )
    repeated = sorted({v for v in items if items.count(v) > 1})
    if repeated:
        raise OptionError(
            f"{what} {', '.join(repeated)} named twice; name each once (repeats: --repeats)"
        )
    return list(items)


@dataclasses.dataclass(frozen=True)
class SpecOption:
    """A command-line option that sets one TrainSpec field (`field` is its dotted path)."""

    flag: str
    field: str
    help: str
    type: Callable | None = None
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def is_flag(self) -> bool:
        descriptor = pb.TrainSpec.DESCRIPTOR
        *path, name = self.field.split(".")
        for part in path:
            descriptor = descriptor.fields_by_name[part].message_type
        return descriptor.fields_by_name[name].type == descriptor.fields_by_name[name].TYPE_BOOL


SPEC_OPTIONS = (
    SpecOption("--epochs", "epochs", "passes over the training data", positive_int),
    SpecOption(
        "--batch-size",
        "batch_size",
        "samples per step: the global batch, whatever --gpus (each device trains on "
        "batch/gpus of it, the learning rate is for the global batch, nothing is rescaled)",
        positive_int,
    ),
    SpecOption(
        "--gpus",
        "gpus",
        "devices one run trains on in data parallel (PyTorch DDP, TensorFlow "
        "MirroredStrategy, JAX sharding); with --device cpu, N CPU devices (to test the code)",
        positive_int,
    ),
    SpecOption(
        "--train-limit", "data.train_limit", "use only the first N training images", positive_int
    ),
    SpecOption("--test-limit", "data.test_limit", "use only the first N test images", positive_int),
    SpecOption("--augment", "data.augment", "training augmentation", choices=specs.AUGMENTS),
    SpecOption(
        "--seed",
        "seed",
        "seeds data order, augmentation and initial weights; repeat r uses seed+r",
        non_negative_int,
    ),
    SpecOption("--device", "device", "auto: CUDA when available", choices=specs.DEVICES),
    SpecOption(
        "--precision",
        "precision",
        "native: each framework's own float32 numerics as it ships (on a GPU with TF32: "
        "PyTorch's convolutions, TensorFlow's and JAX's matmuls and convolutions in TF32); "
        "fp32 is strict (TF32 off)",
        choices=specs.PRECISIONS,
    ),
    SpecOption(
        "--mode",
        "mode",
        "default: as users write it first; tuned: each framework's documented best practice",
        choices=specs.MODES,
    ),
    SpecOption("--compile", "compile", "torch.compile in PyTorch, XLA jit_compile in TensorFlow"),
    SpecOption("--cudnn-benchmark", "cudnn_benchmark", "let cuDNN autotune convolution algorithms"),
    SpecOption(
        "--architecture",
        "model.architecture",
        "canonical: fwbench's identical models; library: torchvision/keras.applications as-is",
        choices=specs.ARCHITECTURES,
    ),
    SpecOption(
        "--init",
        "model.init",
        "initial weights: shared (identical, from the seed), each framework's own, or "
        "pretrained (--weights FILE, identical everywhere)",
        choices=specs.INITS,
    ),
    SpecOption(
        "--save-weights",
        "save_weights_dir",
        "after training, save each run's model in fwbench's canonical layout as DIR/RUN_ID.npz, "
        "a file --init pretrained --weights starts any framework from",
        lambda value: str(Path(value).resolve()),
    ),
    SpecOption("--optimizer", "optimizer.name", "optimizer", choices=specs.OPTIMIZERS),
    SpecOption("--lr", "optimizer.learning_rate", "base learning rate", float),
    SpecOption("--momentum", "optimizer.momentum", "SGD momentum", float),
    SpecOption("--nesterov", "optimizer.nesterov", "SGD with Nesterov momentum"),
    SpecOption(
        "--weight-decay",
        "optimizer.weight_decay",
        "coupled L2 for sgd/adam (as torch.optim), decoupled for adamw",
        float,
    ),
    SpecOption(
        "--lr-schedule", "optimizer.lr_schedule", "per-step schedule", choices=specs.LR_SCHEDULES
    ),
    SpecOption(
        "--label-smoothing", "optimizer.label_smoothing", "label smoothing of the loss", float
    ),
    SpecOption(
        "--deploy",
        "deploy.deploy_enabled",
        "after training, export the model in each serving format of its framework and measure "
        "export, size, fresh-process load, latency and max |Δ| (deploy.csv)",
    ),
    SpecOption(
        "--deploy-warmup",
        "deploy.deploy_warmup_iterations",
        "untimed inference calls per batch size before the timed ones",
        non_negative_int,
    ),
    SpecOption(
        "--deploy-iterations",
        "deploy.deploy_timed_iterations",
        "timed inference calls per batch size (1 and 32), the same for every format",
        positive_int,
    ),
    SpecOption(
        "--sample-interval-ms",
        "sample_interval_ms",
        "NVML/host sampling period; 0 disables sampling",
        non_negative_int,
    ),
)
# Options that choose files (the data, the starting weights) rather than set a spec field, with
# their types: a suite file names them as the command line does.
DATA_TYPES: dict[str, Callable] = {
    "dataset": str,
    "data_dir": Path,
    "archive": Path,
    "weights": Path,
}
DATA_DESTS = tuple(DATA_TYPES)
SPEC_OPTIONS_BY_DEST = {o.dest: o for o in SPEC_OPTIONS}


# Defaults that are not a constant of spec.DEFAULTS, in words.
UNSET_MEANS = {
    "data.train_limit": "all of them",
    "data.test_limit": "all of them",
    "save_weights_dir": "nothing saved",
}


def _default_text(option: SpecOption) -> str:
    if option.is_flag:
        return "off"
    if option.field in UNSET_MEANS:
        return UNSET_MEANS[option.field]
    return str(specs.effective_default(option.field))


def add_spec_arguments(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    """The options that make a TrainSpec (fwbench run, suite, parity). All default to None
    (spec.DEFAULTS then applies), except those `defaults` (dest -> value) gives a job of its own
    (fwbench debug-probe's small job): their help says so."""
    defaults = defaults or {}
    parser.add_argument(
        "--dataset",
        help="synthetic; cifar10; a directory prepared by `fwbench data prepare`; or an "
        "ImageFolder directory/archive, prepared into data/NAME on first use "
        f"(default: {DEFAULT_DATASET})",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where cifar10 or an ImageFolder source is prepared (default: data/NAME)",
    )
    parser.add_argument(
        "--archive",
        type=Path,
        help="the official cifar-10-python.tar.gz, for preparing cifar10 without downloading",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="with --init pretrained: the weights every framework starts from, converted once "
        "into fwbench's canonical layout (a checkpoint of --save-weights, a torchvision "
        ".pth state_dict or a Keras .weights.h5 of the canonical model); a head of other "
        "classes is replaced by the shared initialiser's, seeded",
    )
    for option in SPEC_OPTIONS:
        default = defaults.get(option.dest)
        shown = _default_text(option) if default is None else default
        text = f"{option.help} (default: {shown})"
        if option.is_flag:
            parser.add_argument(
                option.flag, action=argparse.BooleanOptionalAction, default=default, help=text
            )
        else:
            parser.add_argument(
                option.flag, type=option.type, choices=option.choices, default=default, help=text
            )


def spec_dests() -> tuple[str, ...]:
    """Every option dest that add_spec_arguments defines."""
    return (*DATA_DESTS, *(o.dest for o in SPEC_OPTIONS))


def option_value(dest: str, value: object) -> object:
    """A value written as data (a suite file's) for the option `dest` of spec_dests(), checked and
    converted with the command line's type and choices. Raises OptionError."""
    option = SPEC_OPTIONS_BY_DEST.get(dest)
    if option is not None and option.is_flag:  # --compile / --no-compile
        if not isinstance(value, bool):
            raise OptionError(f"expected true or false, got {value!r}")
        return value
    if isinstance(value, bool | list | dict) or value is None:
        raise OptionError(f"expected a single value, got {value!r}")
    # The text a person would have typed: 3.5 is refused by --batch-size as '3.5' would be.
    text = str(value)
    convert = DATA_TYPES[dest] if option is None else (option.type or str)
    try:
        typed = convert(text)
    except argparse.ArgumentTypeError as e:
        raise OptionError(str(e)) from None
    except (TypeError, ValueError):
        raise OptionError(
            f"invalid {getattr(convert, '__name__', 'value')} value: {text!r}"
        ) from None
    choices = option.choices if option is not None else None
    if choices is not None and typed not in choices:
        raise OptionError(f"invalid choice: {typed!r} (choose from {', '.join(choices)})")
    return typed


def spec_from_values(values: Mapping[str, object]) -> pb.TrainSpec:
    """The base TrainSpec (model name, run id unset) of a mapping of option values (dest ->
    value; missing or None: not given), from the command line or a suite file: given values set,
    the rest from spec.DEFAULTS. Prepares the dataset if `dataset` names one that is not ready
    yet, and sizes the head to its classes."""
    spec = pb.TrainSpec()
    for option in SPEC_OPTIONS:
        value = values.get(option.dest)
        if value is not None:
            *path, name = option.field.split(".")
            message = spec
            for part in path:
                message = getattr(message, part)
            setattr(message, name, value)
    dataset = values.get("dataset") or DEFAULT_DATASET
    if dataset == "synthetic":
        spec.data.source = "synthetic"
        sizes = (datasets.SYNTHETIC_TRAIN, datasets.SYNTHETIC_TEST)
    else:
        spec.data.source = "directory"
        data_dir = preparation.resolve(dataset, values.get("data_dir"), values.get("archive"))
        spec.data.data_dir = str(data_dir)
        sizes = _check_directory(data_dir, spec)
    _check_limits(spec, dataset, *sizes)
    spec = specs.with_defaults(spec)
    _check_last_batch(spec, dataset, sizes[0])
    return spec


def build_spec(args: argparse.Namespace) -> pb.TrainSpec:
    """The base TrainSpec of parsed command-line options: spec_from_values of their mapping."""
    return spec_from_values(vars(args))


def _check_directory(data_dir: Path, spec: pb.TrainSpec) -> tuple[int, int]:
    """Verifies a prepared dataset before any service starts (checksums, labels), sets the head
    to its classes; returns its (train, test) sizes."""
    try:
        dataset = datasets.from_directory(data_dir)
    except datasets.DataError as e:
        raise UserError(str(e)) from e
    # The model's head follows the data: a 3-class dataset trains a 3-way classifier.
    spec.model.num_classes = len(dataset.classes)
    return len(dataset.train_labels), len(dataset.test_labels)


def _check_limits(spec: pb.TrainSpec, dataset: str, train_size: int, test_size: int) -> None:
    for flag, limit, size in (
        ("--train-limit", spec.data.train_limit, train_size),
        ("--test-limit", spec.data.test_limit, test_size),
    ):
        if limit > size:
            split = flag.removeprefix("--").removesuffix("-limit")
            raise UserError(
                f"{flag} {limit}: the {split} split of {dataset} has only {size:,} images; "
                f"use at most {size}, or leave {flag} out for all of them"
            )


def _check_last_batch(spec: pb.TrainSpec, dataset: str, train_size: int) -> None:
    """The services' rules on the last batch (schedule.last_batch_of_one, uneven_last_batch),
    checked before any service starts, in the options' words."""
    given = spec.data.HasField("train_limit")
    train = spec.data.train_limit if given else train_size
    what = f"--train-limit {train}" if given else f"the {train:,} training images of {dataset}"
    if schedule.uneven_last_batch(train, spec.batch_size, spec.gpus):
        last = train % spec.batch_size
        fits = train - last % spec.gpus
        raise UserError(
            f"{what} with --batch-size {spec.batch_size}: the last batch of every epoch would "
            f"hold {last} images, which --gpus {spec.gpus} cannot split evenly; use "
            f"--train-limit {fits}, or a --batch-size whose last batch is a multiple of "
            f"{spec.gpus}"
        )
    if not schedule.last_batch_of_one(train, spec.batch_size):
        return
    limits = " or ".join(str(n) for n in (train - 1, train + 1) if 1 <= n <= train_size)
    raise UserError(
        f"{what} with --batch-size {spec.batch_size}: the last batch of every epoch would hold "
        f"1 image, on which BatchNorm cannot train; use --train-limit {limits}, or another "
        "--batch-size"
    )


def synthetic_spec(
    model: str,
    *,
    train_limit: int,
    test_limit: int,
    epochs: int = 1,
    batch_size: int | None = None,
    device: str | None = None,
    run_id: str = "",
) -> pb.TrainSpec:
    """A short run on synthetic data, the rest from spec.DEFAULTS: what friction and the
    benchmarks train."""
    spec = pb.TrainSpec(
        run_id=run_id,
        model=pb.ModelSpec(name=model),
        data=pb.DataSpec(source="synthetic", train_limit=train_limit, test_limit=test_limit),
        epochs=epochs,
    )
    if batch_size is not None:
        spec.batch_size = batch_size
    if device is not None:
        spec.device = device
    return specs.with_defaults(spec)


# Where a weights file converted into the canonical layout is written: beside the prepared
# datasets, under the data root every service reads (data/ locally, /data in its container).
CONVERTED_WEIGHTS_DIR = preparation.DEFAULT_DATA_ROOT / "weights"


def with_weights(spec: pb.TrainSpec, file: Path | None, models: list[str]) -> None:
    """Sets the spec's weights file for --init pretrained --weights FILE: FILE converted once into
    the canonical layout (services/common/weights.py), its head replaced where its classes are
    not the dataset's; every framework then loads those very bytes (their sha256 is in the spec
    and in runs.csv). A canonical file that fits as it is is used in place."""
    if spec.model.init != "pretrained":
        if file is not None:
            raise UserError(f"--weights {file}: read only with --init pretrained; add it")
        return
    if spec.model.architecture == "library":
        if file is not None:
            raise UserError(
                f"--weights {file}: library models start from their library's own weights, "
                "which each service reads from its cache; leave --weights out, or use "
                "--architecture canonical"
            )
        return
    if file is None:
        raise UserError("--init pretrained needs --weights FILE: the weights to start from")
    if len(models) != 1:
        raise UserError(
            f"--weights {file} holds one model's weights; give that one model with --models, "
            f"not {','.join(models)}"
        )
    # The head follows the data: a directory's classes are set by now, synthetic data's are not.
    classes = (
        spec.model.num_classes if spec.model.HasField("num_classes") else datasets.SYNTHETIC_CLASSES
    )
    try:
        tensors, done, canonical = weights.convert(file, models[0], classes, spec.seed)
    except weights.WeightsError as e:
        raise UserError(str(e)) from e
    path = file.resolve()
    if not canonical or done != weights.HEAD_KEPT:
        digest = weights.sha256(path)
        name = f"{models[0]}-{classes}c-seed{spec.seed}-{digest[:16]}"
        path = (CONVERTED_WEIGHTS_DIR / f"{name}{weights.SUFFIX}").resolve()
        weights.save(path, models[0], tensors, f"{file.name} (sha256 {digest}); {done}")
    spec.model.weights_file = str(path)
    spec.model.weights_sha256 = weights.sha256(path)


def for_model(spec: pb.TrainSpec, model: str) -> pb.TrainSpec:
    """A copy of the base spec for one model; the base is never changed."""
    out = pb.TrainSpec()
    out.CopyFrom(spec)
    out.model.name = model
    return out


def validated(args: argparse.Namespace, models: list[str]) -> pb.TrainSpec:
    """The base spec of the options, validated for every model before any service starts."""
    spec = build_spec(args)
    with_weights(spec, getattr(args, "weights", None), models)
    for model in models:
        specs.validate(for_model(spec, model))
    return spec


def add_selection_arguments(
    parser: argparse.ArgumentParser,
    frameworks_default: list[str] | None,
    models_default: list[str] | None,
) -> None:
    """--frameworks and --models; a default of None means "from the suite file"."""
    add_list_argument(parser, "--frameworks", frameworks.NAMES, frameworks_default)
    add_list_argument(parser, "--models", specs.MODELS, models_default)


def add_list_argument(
    parser: argparse.ArgumentParser, flag: str, allowed: tuple[str, ...], default: list[str] | None
) -> None:
    """A comma-separated choice among `allowed` (--frameworks a,b); None: the suite file's."""
    parser.add_argument(
        flag,
        type=csv_choice(allowed, flag.removeprefix("--").removesuffix("s")),
        default=default,
        help=f"comma-separated, out of {','.join(allowed)} (default: "
        + (",".join(default) if default else "the suite file's")
        + ")",
    )


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--launcher",
        choices=("local", "remote"),
        default="local",
        help="local: start each service from its own venv; remote: use running services "
        "(default: local)",
    )
    parser.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="address of a running service (with --launcher remote); several for one framework "
        "make a pool; NAME=dns:///HOST:PORT adds every address HOST resolves to",
    )
    # From the environment too, so that a compose override (docker-compose.tls.yml) secures
    # whatever command the orchestrator's container runs; a flag given wins.
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=_env_path(TLS_CA_ENV),
        metavar="FILE",
        help="remote services speak TLS: the CA (PEM) that signed their certificates "
        f"(default: ${TLS_CA_ENV} when set)",
    )
    parser.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="client certificate (PEM) for mutual TLS"
    )
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="key of --tls-cert (PEM)")
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        default=_env_path(TOKEN_FILE_ENV),
        help=f"file holding the services' shared token (default: ${TOKEN_FILE_ENV} when set, "
        "else the token in $FWBENCH_TOKEN)",
    )
    parser.add_argument(
        "--parallel",
        type=positive_int,
        default=1,
        metavar="N",
        help="local launcher: one service per framework on each of N GPUs, runs on different "
        "GPUs at once (default: 1)",
    )


# The small job every probe breaks, where the person running it did not say otherwise: a few
# steps show every probe's effect, and the first step's tracing dominates them.
DEBUG_JOB_DEFAULTS = {
    "model": "mobilenet_v2",
    "epochs": 1,
    "batch_size": 8,
    "train_limit": 32,
    "test_limit": 16,
}


# The debug-probe options that take a list: dest -> (the names allowed, what one is called).
DEBUG_PROBE_LISTS = {
    "probes": (injection.NAMES, "probe"),
    "executions": (injection.EXECUTIONS, "execution"),
}
# Earlier names of debug-probe options, still accepted (--modes, a suite's `modes:`).
DEBUG_PROBE_ALIASES = {"modes": "executions"}


def debug_probe_value(dest: str, value: object) -> object:
    """A value written as data (a suite's debug_probe) for the `fwbench debug-probe` option
    `dest`, checked as the command line's is. Raises OptionError."""
    if dest in DEBUG_PROBE_LISTS:
        allowed, what = DEBUG_PROBE_LISTS[dest]
        if not isinstance(value, list) or not value:
            raise OptionError(f"expected a non-empty list, e.g. [{', '.join(allowed)}]")
        return names_value(value, allowed, what)
    if dest == "model":
        if value not in specs.MODELS:
            raise OptionError(f"invalid choice: {value!r} (choose from {', '.join(specs.MODELS)})")
        return value
    return option_value(dest, value)


def add_debug_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """What `fwbench debug-probe` (and a suite's debug_probe key) accepts besides --out and the
    launch options: which frameworks, probes and executions, and the small job's spec."""
    add_list_argument(parser, "--frameworks", frameworks.NAMES, list(frameworks.NAMES))
    parser.add_argument(
        "--probes",
        type=csv_choice(injection.NAMES, "probe"),
        default=list(injection.NAMES),
        help=f"comma-separated, out of {','.join(injection.NAMES)} (default: all)",
    )
    parser.add_argument(
        "--executions",
        "--modes",  # its earlier name, kept working
        dest="executions",
        type=csv_choice(injection.EXECUTIONS, "execution"),
        default=list(injection.EXECUTIONS),
        help="comma-separated: graph (what users run: Keras fit's tf.function, jax.jit, PyTorch "
        "eager) and eager (run_eagerly, jax.disable_jit()) (default: both; --modes: the same, "
        "its earlier name)",
    )
    parser.add_argument(
        "--model",
        choices=specs.MODELS,
        default=DEBUG_JOB_DEFAULTS["model"],
        help="the small job's model (default: %(default)s)",
    )
    add_spec_arguments(parser, {k: v for k, v in DEBUG_JOB_DEFAULTS.items() if k != "model"})
