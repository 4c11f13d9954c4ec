"""`fwbench friction`: what it costs to get each framework running, measured instead of told.

Per framework, with --install venv (the default), everything in a temporary directory that is
removed afterwards:
- build: a fresh venv and `pip install -r services/<framework>/requirements.txt`, as
  scripts/setup-env does it (pip upgraded first), with a cold pip cache of its own; its size;
- what got installed (read from the installed metadata): distributions, their total size, the
  NVIDIA/CUDA libraries' size and CUDA major versions, protobuf's version and the range that the
  framework's own metadata accepts;
- import time: cold (the first import after the build) and warm (median of fresh interpreters);
- time to first training step per model: a real TrainerService started from the fresh venv,
  one Train of tiny synthetic data each, read from RunEnd.time_to_first_step_s (a fresh worker
  process: import + data + model build + first step);
- code: non-blank, non-comment lines (docstrings count as comments) of services/<framework>'s
  trainer.py and models.py, and their `# friction:` comments: the convention by which each
  framework-specific workaround is explained where it is made;
- what the GPU image would install (services/<framework>/requirements-gpu.txt where it exists):
  resolved with `pip install --dry-run`, never downloaded, for its CUDA majors.
Then the shared-environment probe, the reason for isolation: all frameworks in one fresh venv.
Does pip resolve, what `pip check` says, what was downgraded against the frameworks' own venvs,
what is duplicated, how many CUDA majors, and whether the frameworks import and train a step in
one interpreter, in each order, each in a fresh interpreter. A crash there is a finding, not a
failure of fwbench. The GPU images' requirements are resolved together the same way.

--install docker (docker, or podman where no Docker daemon answers): each image of
docker-compose.yml built cold and warm, its size and layers, what pip downloaded, and container
start to SERVING.

The package: common (rows, subjects), venv (building an environment), environment (what got
installed), probes (import, first step, one process), code (lines and workarounds), measure
(the venv install), docker (the docker install), table (friction.csv's frame and terminal table;
the report's section is report/install_friction.py).

Output: DIR/friction.csv (one row per framework and measure), a section of DIR/report.md, and a
table on the terminal.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from orchestrator.friction.code import code_counts, code_rows
from orchestrator.friction.common import FrictionError, Row, Subject
from orchestrator.friction.docker import measure_docker
from orchestrator.friction.environment import (
    cuda_majors,
    environment_rows,
    inspect_environment,
    is_cuda_library,
)
from orchestrator.friction.measure import measure_venv
from orchestrator.friction.probes import first_step_rows
from orchestrator.friction.table import frame, print_table
from services.common import frameworks

# What `fwbench friction --install` measures: fresh virtualenvs, or the images.
INSTALLS = ("venv", "docker")

__all__ = [
    "INSTALLS",
    "FrictionError",
    "Row",
    "Subject",
    "code_counts",
    "code_rows",
    "cuda_majors",
    "environment_rows",
    "first_step_rows",
    "frame",
    "inspect_environment",
    "is_cuda_library",
    "measure",
    "measure_docker",
    "measure_venv",
    "print_table",
]


def measure(args: argparse.Namespace, console: Console):
    """`fwbench friction`'s measurements as friction.csv's frame (table.frame)."""
    subjects = [Subject.of(frameworks.get(name)) for name in args.frameworks]
    if args.install == "docker":
        rows = measure_docker(subjects, console)
    else:
        rows = measure_venv(subjects, args.models, console, shared=not args.no_shared)
    return frame(rows)
