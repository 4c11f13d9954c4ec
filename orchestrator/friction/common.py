"""Constants and the row type of every friction measurement."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from orchestrator.errors import UserError
from services.common import frameworks

ROOT = frameworks.ROOT
GIB = 2**30
WARM_IMPORTS = 5
# Two steps, so that the first is followed by a normal one; the smallest test split that works.
FIRST_STEP_BATCH = 32
FIRST_STEP_TRAIN_LIMIT = 2 * FIRST_STEP_BATCH
PIP_TIMEOUT_S = 3600
PROBE_TIMEOUT_S = 900
OUTPUT_TAIL_LINES = 15
FRICTION_COMMENT = re.compile(r"#\s*friction:")
CUDA_SUFFIX = re.compile(r"-cu(\d+)$")
# Distributions whose version's major is the CUDA major (the others, cuFFT 12.x for CUDA 13 and
# the like, carry their own numbering, or a -cuNN suffix).
CUDA_VERSIONED = {"cuda-toolkit", "cuda-bindings", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc"}
# NVML's Python bindings: an NVIDIA distribution, but no CUDA library.
NOT_CUDA = {"nvidia-ml-py"}


@dataclasses.dataclass
class Row:
    framework: str
    measure: str
    value: object
    unit: str = ""
    detail: str = ""


class FrictionError(UserError):
    """Friction cannot be measured as asked (no Docker engine, ...): exit code 2."""


def output_tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(line for line in text.strip().splitlines()[-lines:])


@dataclasses.dataclass(frozen=True)
class Subject:
    """What friction measures: a framework, or (in the tests) any installable stand-in."""

    name: str
    requirements: Path  # what its local venv is built from
    image_requirements: Path  # what its GPU image installs
    distribution: str  # the framework's own distribution, whose metadata states its protobuf range
    imports: str  # the statement timed as "import"
    step: str  # one training step, after `imports` (the shared-environment probe)
    service: bool  # a fwbench framework: services/<name> with its TrainerService

    @classmethod
    def of(cls, framework: frameworks.Framework) -> Subject:
        return cls(
            name=framework.name,
            requirements=framework.requirements,
            image_requirements=framework.gpu_requirements,
            distribution=framework.distribution,
            imports=framework.imports,
            # services/<name>/smoke.py: one training step of the framework's own library model.
            step=f"from services.{framework.name} import smoke; smoke.train_one_step()",
            service=True,
        )
