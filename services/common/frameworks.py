"""The frameworks fwbench compares: the one list that every other list derives from.

A framework is a folder, `services/<name>/`, and one entry in FRAMEWORKS below:

    services/<name>/trainer.py          a module that satisfies `Trainer` (checked when loaded)
    services/<name>/models.py           the canonical architectures built natively
    services/<name>/requirements.txt    its environment (.venvs/<name>, and its image)
    services/<name>/requirements-gpu.txt  optional: what a host with an NVIDIA driver adds
    Framework(..., cuda=...)            its image: services/Dockerfile, one for every framework,
                                        built with build_args below; a service of the same name
                                        in docker-compose.yml passes them (tests/test_containers.py
                                        checks it)

The CLI's choices, the server, scripts/setup-env, `make setup`, friction and the tests read this
list. It imports nothing beyond the standard library, so that scripts run it before any
environment exists:

    python3 services/common/frameworks.py names              pytorch tensorflow ...
    python3 services/common/frameworks.py requirements NAME [--gpu]
    python3 services/common/frameworks.py build-args NAME    FRAMEWORK=NAME, one a line
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fwbench.v1 import trainer_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent.parent


class Trainer(Protocol):
    """What a framework's `services/<name>/trainer.py` provides, run in a fresh worker process
    (services/common/worker.py) that has imported only that framework."""

    def describe(self) -> pb.DescribeResponse:
        """Versions, CUDA/cuDNN and devices, as this framework sees them."""

    def inspect(self, request: pb.InspectRequest) -> pb.ModelReport:
        """The spec's model, built but not trained: counts, structure, probe logits and losses."""

    def train(self, spec: pb.TrainSpec, recorder) -> None:
        """Trains the spec, reporting through the recorder's hooks (services/common/recorder.py)."""


@dataclasses.dataclass(frozen=True)
class Framework:
    # Registry key, `--framework` of the server, .venvs/<name>, compose service and image name.
    name: str
    # As people write it, for tables and reports.
    title: str
    # The PyPI distribution of the framework itself, whose metadata states its protobuf range.
    distribution: str
    # The statement that fwbench friction times as "import".
    imports: str
    # The installed packages that are the framework to its users (a traceback frame in one of
    # them is the framework's own, in debug probes).
    packages: tuple[str, ...]
    # The CUDA its GPU wheels bring (torch's nvidia-* wheels, TensorFlow's `and-cuda`, JAX's
    # `cuda13`): its image is based on nvidia/cuda:<cuda>-base-ubuntu24.04, whose
    # NVIDIA_REQUIRE_CUDA refuses a driver too old for it.
    cuda: str
    # How the framework makes N devices of the CPU, for a run over N CPU devices (TrainSpec.gpus
    # on device cpu), where that must be set in the environment before the framework is
    # imported: an XLA flag appended to XLA_FLAGS, "{devices}" standing for N. Empty where the
    # framework does it once imported (TensorFlow's logical devices) or has a process per device
    # (PyTorch).
    cpu_devices_xla_flag: str = ""

    def devices_environment(self, devices: int, environ: dict[str, str]) -> dict[str, str]:
        """What the worker that trains a run over `devices` devices adds to its environment
        before it imports the framework (nothing for one device)."""
        if devices <= 1 or not self.cpu_devices_xla_flag:
            return {}
        flag = self.cpu_devices_xla_flag.format(devices=devices)
        return {"XLA_FLAGS": " ".join(filter(None, [environ.get("XLA_FLAGS"), flag]))}

    @property
    def folder(self) -> Path:
        return ROOT / "services" / self.name

    @property
    def requirements(self) -> Path:
        return self.folder / "requirements.txt"

    @property
    def gpu_requirements(self) -> Path:
        """What a host with an NVIDIA driver (and the GPU image) installs."""
        gpu = self.folder / "requirements-gpu.txt"
        return gpu if gpu.exists() else self.requirements

    @property
    def dockerfile(self) -> Path:
        """One for every framework; build_args make it this one's."""
        return ROOT / "services" / "Dockerfile"

    @property
    def build_args(self) -> dict[str, str]:
        """The build arguments of services/Dockerfile that make this framework's image."""
        return {
            "FRAMEWORK": self.name,
            "CUDA_VERSION": self.cuda,
            "REQUIREMENTS": self.gpu_requirements.relative_to(ROOT).as_posix(),
        }

    @property
    def base_image(self) -> str:
        return f"nvidia/cuda:{self.cuda}-base-ubuntu24.04"

    @property
    def image(self) -> str:
        return f"fwbench/{self.name}:latest"

    @property
    def trainer_module(self) -> str:
        return f"services.{self.name}.trainer"

    def load_trainer(self) -> Trainer:
        """Imports the trainer module (and with it the framework) and checks it is a Trainer."""
        module = importlib.import_module(self.trainer_module)
        check_trainer(module)
        return module


def check_trainer(module: ModuleType) -> None:
    """Raises TypeError naming what `module` lacks to satisfy Trainer: each method by name, with
    the same positional parameters."""
    problems = []
    for name, expected in _protocol_methods().items():
        function = getattr(module, name, None)
        if not callable(function):
            problems.append(f"no function {name}({', '.join(expected)})")
            continue
        actual = [
            p.name
            for p in inspect.signature(function).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(actual) != len(expected):
            problems.append(f"{name}({', '.join(actual)}) should take ({', '.join(expected)})")
    if problems:
        raise TypeError(f"{module.__name__} is not a fwbench Trainer: {'; '.join(problems)}")


def _protocol_methods() -> dict[str, list[str]]:
    """Trainer's methods and their parameters, without `self`."""
    return {
        name: list(inspect.signature(member).parameters)[1:]
        for name, member in vars(Trainer).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


FRAMEWORKS: dict[str, Framework] = {
    f.name: f
    for f in (
        Framework(
            "pytorch",
            "PyTorch",
            "torch",
            "import torch, torchvision",
            ("torch", "torchvision"),
            cuda="13.0.2",
        ),
        Framework(
            "tensorflow",
            "TensorFlow",
            "tensorflow",
            "import tensorflow as tf, keras",
            ("tensorflow", "keras", "tf_keras"),
            cuda="12.9.1",
        ),
        Framework(
            "jax",
            "JAX",
            "jax",
            "import jax, flax, optax",
            ("jax", "jaxlib", "flax", "optax"),
            cuda="13.0.2",
            # Read once, when JAX starts its CPU backend.
            cpu_devices_xla_flag="--xla_force_host_platform_device_count={devices}",
        ),
    )
}
NAMES: tuple[str, ...] = tuple(FRAMEWORKS)


def get(name: str) -> Framework:
    """The framework called name, or a ValueError listing the known ones."""
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ValueError(f"framework {name!r} is not one of {', '.join(NAMES)}") from None


def main(argv: list[str]) -> int:
    if argv == ["names"]:
        print(" ".join(NAMES))
        return 0
    if len(argv) in (2, 3) and argv[0] == "requirements" and argv[2:] in ([], ["--gpu"]):
        try:
            framework = get(argv[1])
        except ValueError as e:
            print(e, file=sys.stderr)
            return 2
        print(framework.gpu_requirements if argv[2:] else framework.requirements)
        return 0
    if len(argv) == 2 and argv[0] == "build-args":
        try:
            framework = get(argv[1])
        except ValueError as e:
            print(e, file=sys.stderr)
            return 2
        for key, value in framework.build_args.items():
            print(f"{key}={value}")
        return 0
    print(
        "usage: frameworks.py names | requirements NAME [--gpu] | build-args NAME", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
