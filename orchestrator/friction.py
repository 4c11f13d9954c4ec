"""`fwbench friction`: what it costs to get each framework running, measured instead of told.

Per framework, in venv mode (the default), everything in a temporary directory that is removed
afterwards:
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

docker mode (docker, or podman where no Docker daemon answers): each image of docker-compose.yml
built cold and warm, its size and layers, what pip downloaded, and container start to SERVING.

Output: DIR/friction.csv (one row per framework and measure), a section of DIR/report.md, and a
table on the terminal.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import dataclasses
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tokenize
from importlib import metadata
from pathlib import Path

import grpc
import pandas as pd
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import launchers
from orchestrator.cli import UserError
from orchestrator.client import TrainerClient
from services.common import spec as specs

ROOT = launchers.ROOT
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

TORCH_STEP = """
model = torchvision.models.mobilenet_v2(num_classes=10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
torch.nn.functional.cross_entropy(model(images), labels).backward()
optimizer.step()
"""
KERAS_STEP = """
import numpy as np
model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
model.train_on_batch(np.zeros((8, 32, 32, 3), "float32"), np.zeros(8, "int64"))
"""


@dataclasses.dataclass(frozen=True)
class Framework:
    name: str
    requirements: Path  # what its local venv is built from
    image_requirements: Path  # what its GPU image installs
    distribution: str  # the framework's own distribution, whose metadata states its protobuf range
    imports: str  # the statement timed as "import"
    step: str  # one training step, after `imports` (the shared-environment probe)
    service: bool  # services/<name> has trainer.py, models.py and a TrainerService


def _service_framework(name: str, distribution: str, imports: str, step: str) -> Framework:
    folder = ROOT / "services" / name
    gpu = folder / "requirements-gpu.txt"
    return Framework(
        name=name,
        requirements=folder / "requirements.txt",
        image_requirements=gpu if gpu.exists() else folder / "requirements.txt",
        distribution=distribution,
        imports=imports,
        step=step,
        service=True,
    )


FRAMEWORKS = {
    "pytorch": _service_framework("pytorch", "torch", "import torch, torchvision", TORCH_STEP),
    "tensorflow": _service_framework(
        "tensorflow", "tensorflow", "import tensorflow as tf, keras", KERAS_STEP
    ),
}


@dataclasses.dataclass
class Row:
    framework: str
    measure: str
    value: object
    unit: str = ""
    detail: str = ""


class FrictionError(UserError):
    """Friction cannot be measured as asked (no Docker engine, ...): exit code 2."""


# ---- building an environment ---------------------------------------------------------------------


@dataclasses.dataclass
class Build:
    ok: bool
    seconds: float
    output_tail: str


def _stream(cmd: list[str], env: dict, status, label: str) -> tuple[int, str]:
    """Runs cmd, showing its latest output line on the status line; (exit code, output tail).
    No time limit: pip and docker have their own network timeouts, and Ctrl-C stops both."""
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    ) as process:
        for line in process.stdout:
            if line.strip():
                tail.append(line.rstrip())
                status.update(escape(f"{label}: {line.strip()[:100]}"))
    return process.returncode, "\n".join(tail)


def build_venv(directory: Path, requirements: list[Path], status, label: str) -> tuple[Path, Build]:
    """A fresh venv in directory/venv with requirements installed, as scripts/setup-env builds
    one, with a pip cache of its own in directory/pip-cache (cold): (its python, the build)."""
    venv = directory / "venv"
    env = os.environ | {
        "PIP_CACHE_DIR": str(directory / "pip-cache"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_PROGRESS_BAR": "off",
    }
    python = venv / "bin" / "python"
    requirement_args = [arg for path in requirements for arg in ("-r", str(path))]
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", *requirement_args],
    ]
    start = time.perf_counter()
    for cmd in steps:
        code, tail = _stream(cmd, env, status, label)
        if code != 0:
            return python, Build(False, time.perf_counter() - start, tail)
    return python, Build(True, time.perf_counter() - start, "")


def size_on_disk(path: Path) -> int:
    """Bytes that path's files occupy (hard links once, symbolic links not followed)."""
    seen, total = set(), 0
    for folder, _, files in os.walk(path):
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


# ---- what got installed --------------------------------------------------------------------------


@dataclasses.dataclass
class Environment:
    size_bytes: int
    versions: dict[str, str]  # canonical distribution name -> version
    dist_bytes: dict[str, int]
    nvidia_cuda_bytes: int
    cuda_majors: list[int]
    protobuf_version: str | None
    protobuf_accepted: dict[str, str]  # distribution -> the specifier it puts on protobuf
    duplicates: list[str]


def is_cuda_library(name: str) -> bool:
    name = canonicalize_name(name)
    return name not in NOT_CUDA and (
        name.startswith(("nvidia-", "cuda-")) or CUDA_SUFFIX.search(name) is not None
    )


def cuda_majors(versions: dict[str, str]) -> list[int]:
    """CUDA major versions that a set of distributions (name -> version) is built for."""
    majors = set()
    for name, version in versions.items():
        name = canonicalize_name(name)
        if suffix := CUDA_SUFFIX.search(name):
            majors.add(int(suffix.group(1)))
        elif name in CUDA_VERSIONED:
            majors.add(Version(version).major)
    return sorted(majors)


def cuda_duplicates(names) -> list[str]:
    """Libraries present for two CUDA majors: nvidia-cublas (CUDA 13) beside nvidia-cublas-cu12."""
    by_library = collections.defaultdict(list)
    for name in names:
        if is_cuda_library(name):
            by_library[CUDA_SUFFIX.sub("", canonicalize_name(name))].append(name)
    return [" and ".join(sorted(n)) for n in by_library.values() if len(n) > 1]


def site_packages(venv: Path) -> Path:
    [site] = sorted(venv.glob("lib/python*/site-packages"))
    return site


def inspect_environment(venv: Path, framework_distribution: str) -> Environment:
    """Reads a venv's installed metadata (RECORD, METADATA): no import of what is installed."""
    site = site_packages(venv)
    versions, dist_bytes, requires = {}, {}, {}
    owners: dict[str, list[str]] = collections.defaultdict(list)
    names = collections.Counter()
    for dist in metadata.distributions(path=[str(site)]):
        name = canonicalize_name(dist.metadata["Name"])
        names[name] += 1
        versions[name] = dist.version
        requires[name] = dist.requires or []
        total = 0
        for file in dist.files or []:
            owners[str(file)].append(name)
            with contextlib.suppress(OSError):
                total += os.lstat(site / file).st_size
        dist_bytes[name] = total
    duplicates = [f"{name} installed {count} times" for name, count in names.items() if count > 1]
    duplicates += cuda_duplicates(versions)
    # Files two distributions both install: the second overwrote the first. Packages' __init__.py
    # in shared namespaces (nvidia/) are identical by design.
    clashes = {
        file: dists
        for file, dists in owners.items()
        if len(set(dists)) > 1 and not file.endswith(("__init__.py", ".pyc"))
    }
    for dists, files in _group(clashes).items():
        duplicates.append(
            f"{' and '.join(dists)} both install {len(files)} file(s), e.g. {files[0]}"
        )
    accepted = {}
    for name, lines in requires.items():
        for line in lines:
            with contextlib.suppress(InvalidRequirement):
                requirement = Requirement(line)
                if canonicalize_name(requirement.name) == "protobuf" and not (
                    requirement.marker and "extra" in str(requirement.marker)
                ):
                    # Lower bounds first: ">=6.31.1,<8" reads as a range.
                    bounds = sorted(map(str, requirement.specifier), key=lambda b: b[0] == "<")
                    accepted[name] = ",".join(bounds) or "any"
    framework = canonicalize_name(framework_distribution)
    return Environment(
        size_bytes=size_on_disk(venv),
        versions=versions,
        dist_bytes=dist_bytes,
        nvidia_cuda_bytes=sum(b for n, b in dist_bytes.items() if is_cuda_library(n)),
        cuda_majors=cuda_majors(versions),
        protobuf_version=versions.get("protobuf"),
        protobuf_accepted=dict(sorted(accepted.items(), key=lambda kv: kv[0] != framework)),
        duplicates=duplicates,
    )


def _group(clashes: dict[str, list[str]]) -> dict[tuple[str, ...], list[str]]:
    grouped = collections.defaultdict(list)
    for file, dists in sorted(clashes.items()):
        grouped[tuple(sorted(set(dists)))].append(file)
    return grouped


def environment_rows(framework: str, env: Environment, distribution: str) -> list[Row]:
    largest = sorted(env.dist_bytes.items(), key=lambda kv: -kv[1])[:3]
    framework_range = env.protobuf_accepted.get(canonicalize_name(distribution))
    others = [f"{d}: {s}" for d, s in env.protobuf_accepted.items() if d != distribution]
    return [
        Row(framework, "env_size_bytes", env.size_bytes, "bytes", "the venv on disk"),
        Row(
            framework,
            "distributions",
            len(env.versions),
            "count",
            "largest: " + ", ".join(f"{n} {b / GIB:.2f} GiB" for n, b in largest),
        ),
        Row(framework, "installed_bytes", sum(env.dist_bytes.values()), "bytes", "per RECORD"),
        Row(
            framework,
            "nvidia_cuda_bytes",
            env.nvidia_cuda_bytes,
            "bytes",
            f"{sum(is_cuda_library(n) for n in env.versions)} nvidia-*/cuda-* distributions",
        ),
        Row(framework, "cuda_majors", _majors(env.cuda_majors), "", "of the installed libraries"),
        Row(framework, "protobuf_version", env.protobuf_version or "not installed"),
        Row(
            framework,
            "protobuf_accepted",
            framework_range or f"any ({distribution} does not depend on protobuf)",
            "",
            "; ".join(others),
        ),
    ]


def _majors(majors: list[int]) -> str:
    return "+".join(map(str, majors)) or "none"


def resolve_only(python: Path, requirements: list[Path], directory: Path) -> tuple[bool, dict, str]:
    """pip's resolution of requirements without installing (metadata only, no wheels):
    (resolves, {name: version}, pip's output tail on failure)."""
    report = directory / "resolution.json"
    args = [str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    args += ["--report", str(report)]
    args += [a for path in requirements for a in ("-r", str(path))]
    env = os.environ | {"PIP_CACHE_DIR": str(directory / "pip-cache")}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=PIP_TIMEOUT_S)
    if result.returncode != 0:
        return False, {}, _tail(result.stdout + result.stderr)
    installs = json.loads(report.read_text())["install"]
    versions = {
        canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs
    }
    return True, versions, ""


def _tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(line for line in text.strip().splitlines()[-lines:])


# ---- import and first step -----------------------------------------------------------------------


def import_seconds(python: Path, imports: str) -> float:
    """Seconds `imports` takes in a fresh interpreter (interpreter start-up excluded)."""
    code = (
        f"import time\nstart = time.perf_counter()\n{imports}\nprint(time.perf_counter() - start)"
    )
    result = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
    )
    if result.returncode != 0:
        raise ImportFailed(_tail(result.stderr, 3) or f"exit {result.returncode}")
    return float(result.stdout.strip().splitlines()[-1])


class ImportFailed(Exception):
    pass


def import_rows(framework: str, python: Path, imports: str, repeats: int) -> list[Row]:
    try:
        cold = import_seconds(python, imports)
        warm = [import_seconds(python, imports) for _ in range(repeats)]
    except ImportFailed as e:  # a broken environment is a finding too
        return [Row(framework, "import_cold_s", math.nan, "s", f"`{imports}` failed: {e}")]
    return [
        Row(framework, "import_cold_s", round(cold, 3), "s", f"`{imports}`, first after the build"),
        Row(
            framework,
            "import_warm_s",
            round(statistics.median(warm), 3),
            "s",
            f"median of {repeats} fresh interpreters (min {min(warm):.2f}, max {max(warm):.2f})",
        ),
    ]


def first_step_rows(
    framework: str, python: Path, models: list[str], log_dir: Path, status
) -> list[Row]:
    """Time to first step per model, from a TrainerService running in `python`'s environment."""
    rows = []
    with launchers.local([framework], log_dir, {framework: python}) as addresses:
        client = TrainerClient(framework, addresses[framework])
        try:
            for model in models:
                status.update(f"{framework}: first training step of {model}")
                spec = specs.with_defaults(
                    pb.TrainSpec(
                        run_id=f"friction-{model}",
                        model=pb.ModelSpec(name=model),
                        data=pb.DataSpec(
                            source="synthetic",
                            train_limit=FIRST_STEP_TRAIN_LIMIT,
                            test_limit=FIRST_STEP_BATCH,
                        ),
                        epochs=1,
                        batch_size=FIRST_STEP_BATCH,
                    )
                )
                rows.append(_first_step(framework, model, client, spec))
        finally:
            client.close()
    return rows


def _first_step(framework: str, model: str, client: TrainerClient, spec: pb.TrainSpec) -> Row:
    measure = f"time_to_first_step_s[{model}]"
    started = end = None
    try:
        for event in client.train(spec):
            kind = event.WhichOneof("event")
            if kind == "run_started":
                started = event.run_started
            elif kind == "run_end":
                end = event.run_end
    except grpc.RpcError as e:
        return Row(framework, measure, math.nan, "s", f"{e.code().name}: {e.details()}")
    if end is None or started is None:
        return Row(framework, measure, math.nan, "s", "the stream ended without RunEnd")
    detail = (
        f"on {started.device_name}: import {started.import_s:.2f} + data "
        f"{started.data_load_s:.2f} + build {started.build_s:.2f} s, first step "
        f"{end.first_step_s:.2f} s"
    )
    return Row(framework, measure, round(end.time_to_first_step_s, 3), "s", detail)


# ---- code ----------------------------------------------------------------------------------------


def code_counts(path: Path) -> tuple[int, int]:
    """(non-blank, non-comment lines, `# friction:` comments) of a Python file. Docstrings
    count as comments; the lines of a multi-line statement or string all count."""
    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    code, friction = set(), 0
    layout = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            friction += FRICTION_COMMENT.match(token.string) is not None
        elif token.type not in layout:
            code.update(range(token.start[0], token.end[0] + 1))
    return len(code - docstrings), friction


def code_rows(framework: str) -> list[Row]:
    files = [ROOT / "services" / framework / name for name in ("trainer.py", "models.py")]
    present = [f for f in files if f.exists()]
    counts = [code_counts(f) for f in present]
    names = " + ".join(str(f.relative_to(ROOT)) for f in present)
    return [
        Row(framework, "code_lines", sum(c[0] for c in counts), "lines", names),
        Row(framework, "friction_comments", sum(c[1] for c in counts), "count", names),
    ]


# ---- the shared-environment probe ----------------------------------------------------------------


def probe_one_process(python: Path, order: tuple[Framework, ...]) -> tuple[str, str]:
    """Imports the frameworks in `order` in one fresh interpreter, then trains a step of each:
    ('ok' or what went wrong, detail). Each stage prints a marker before and after it, so that
    the last marker tells which stage a crash interrupted."""
    code = []
    for verb, done, attribute in (
        ("importing", "imported", "imports"),
        ("stepping", "stepped", "step"),
    ):
        for framework in order:
            code += [
                f"print('{verb} {framework.name}', flush=True)",
                getattr(framework, attribute),
                f"print('{done} {framework.name}', flush=True)",
            ]
    source = "\n".join(code)
    start = time.perf_counter()
    try:
        # faulthandler: on a fatal signal, Python prints where the interpreter was.
        result = subprocess.run(
            [str(python), "-X", "faulthandler", "-c", source],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return f"hung (killed after {PROBE_TIMEOUT_S} s)", ""
    markers = result.stdout.splitlines()
    done = [m for m in markers if m.startswith(("imported ", "stepped "))]
    progress = f"done: {', '.join(done) or 'nothing'}; {time.perf_counter() - start:.1f} s"
    if result.returncode == 0:
        return "ok", progress
    if result.returncode > 0:  # a Python exception: its last line says what
        return f"failed: exit {result.returncode}", f"{progress}; {_tail(result.stderr, 1)}"
    what = f"crashed: {signal.Signals(-result.returncode).name} (exit {result.returncode})"
    during = f"; while {markers[-1]}" if markers and markers[-1] not in done else ""
    return what, f"{progress}{during}{_innermost_frame(result.stderr, source)}"


def _innermost_frame(stderr: str, source: str) -> str:
    """Where faulthandler's dump (most recent call first) says Python was, past importlib."""
    for file, line in re.findall(r'File "(.+?)", line (\d+)', stderr):
        if file == "<string>":
            return f"; at `{source.splitlines()[int(line) - 1].strip()}`"
        if not file.startswith("<frozen"):
            return f"; innermost Python frame {file.rpartition('site-packages/')[2]}:{line}"
    return ""


def shared_rows(
    frameworks: list[Framework],
    alone: dict[str, dict[str, str]],
    images_alone: dict[str, dict[str, str]],
    workdir: Path,
    status,
) -> list[Row]:
    """The shared-environment probe; `alone` and `images_alone` are the versions each framework
    got in its own venv and its own image's resolution, to tell what being together downgraded."""
    label = "+".join(f.name for f in frameworks)
    rows = []
    status.update(f"{label}: building one venv with every framework")
    python, build = build_venv(
        workdir / "shared", [f.requirements for f in frameworks], status, label
    )
    rows.append(Row(label, "build_s", round(build.seconds, 1), "s", "one venv, cold pip cache"))
    rows.append(Row(label, "resolves", build.ok, "", build.output_tail if not build.ok else ""))
    if build.ok:
        env = inspect_environment(python.parent.parent, frameworks[0].distribution)
        rows += [
            Row(label, "env_size_bytes", env.size_bytes, "bytes", "the venv on disk"),
            Row(label, "distributions", len(env.versions), "count"),
            Row(label, "installed_bytes", sum(env.dist_bytes.values()), "bytes", "per RECORD"),
            Row(label, "nvidia_cuda_bytes", env.nvidia_cuda_bytes, "bytes"),
            Row(label, "cuda_majors", _majors(env.cuda_majors), "", "of the installed libraries"),
            Row(label, "protobuf_version", env.protobuf_version or "not installed"),
        ]
        check = subprocess.run(
            [str(python), "-m", "pip", "check"], capture_output=True, text=True, timeout=300
        )
        problems = [line for line in check.stdout.splitlines() if line.strip()]
        rows.append(
            Row(
                label,
                "pip_check",
                "ok" if check.returncode == 0 else f"{len(problems)} problem(s)",
                "",
                "; ".join(problems) if check.returncode != 0 else "",
            )
        )
        rows.append(Row(label, "downgraded", *_downgrades(env.versions, alone)))
        rows.append(
            Row(label, "duplicated", len(env.duplicates), "count", "; ".join(env.duplicates))
        )
        for order in itertools.permutations(frameworks):
            names = " then ".join(f.name for f in order)
            status.update(f"{label}: import {names} in one interpreter, then a step of each")
            outcome, detail = probe_one_process(python, order)
            rows.append(Row(label, f"one_process[{names}]", outcome, "", detail))
    status.update(f"{label}: resolving the GPU images' requirements together")
    image, versions = image_rows(label, python, [f.image_requirements for f in frameworks])
    rows += image
    if versions:
        rows.append(Row(label, "image_downgraded", *_downgrades(versions, images_alone)))
    return rows


def _downgrades(together: dict[str, str], alone: dict[str, dict[str, str]]) -> tuple:
    """(count, unit, detail) of distributions that the frameworks together get at a lower version
    than some framework gets alone; versions are {distribution: version}, alone per framework."""
    lower = []
    for name, version in sorted(together.items()):
        for framework, own in alone.items():
            if name in own and Version(version) < Version(own[name]):
                lower.append(f"{name} {own[name]} ({framework} alone) → {version}")
    return len(lower), "count", "; ".join(lower)


def image_rows(label: str, python: Path, requirements: list[Path]) -> tuple[list[Row], dict]:
    """What the GPU image(s) would install, resolved (not downloaded) by pip:
    (rows, {distribution: version})."""
    files = " + ".join(
        str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in requirements
    )
    with tempfile.TemporaryDirectory(prefix="fwbench-resolve-") as directory:
        resolves, versions, tail = resolve_only(python, requirements, Path(directory))
    if not resolves:
        return [Row(label, "image_resolves", False, "", f"{files}: {tail}")], {}
    cuda = {n: v for n, v in versions.items() if is_cuda_library(n)}
    twice = cuda_duplicates(versions)
    rows = [
        Row(label, "image_resolves", True, "", f"{files}, pip --dry-run on this machine's Python"),
        Row(
            label,
            "image_cuda_majors",
            _majors(cuda_majors(versions)),
            "",
            f"{len(cuda)} nvidia-*/cuda-* distributions in the resolution",
        ),
        Row(label, "image_duplicated", len(twice), "count", "; ".join(twice)),
    ]
    return rows, versions


# ---- venv mode, docker mode ----------------------------------------------------------------------


def measure_venv(
    frameworks: list[Framework],
    models: list[str],
    console: Console,
    shared: bool = True,
    warm_imports: int = WARM_IMPORTS,
) -> list[Row]:
    rows: list[Row] = []
    alone: dict[str, dict[str, str]] = {}  # framework -> its own venv's {distribution: version}
    images_alone: dict[str, dict[str, str]] = {}  # the same for its image's resolution
    with (
        tempfile.TemporaryDirectory(prefix="fwbench-friction-") as directory,
        console.status("friction") as status,
    ):
        workdir = Path(directory)
        for framework in frameworks:
            rows += code_rows(framework.name) if framework.service else []
            python, build = build_venv(
                workdir / framework.name, [framework.requirements], status, framework.name
            )
            rows.append(Row(framework.name, "build_s", round(build.seconds, 1), "s", _built(build)))
            if not build.ok:
                console.print(
                    f"[red]{framework.name}: pip failed[/red]\n{escape(build.output_tail)}"
                )
                continue
            status.update(f"{framework.name}: importing")
            rows += import_rows(framework.name, python, framework.imports, warm_imports)
            env = inspect_environment(python.parent.parent, framework.distribution)
            alone[framework.name] = env.versions
            rows += environment_rows(framework.name, env, framework.distribution)
            if framework.service and models:
                _generate_proto(python)
                rows += first_step_rows(framework.name, python, models, workdir / "logs", status)
            status.update(f"{framework.name}: resolving the GPU image's requirements")
            image, images_alone[framework.name] = image_rows(
                framework.name, python, [framework.image_requirements]
            )
            rows += image
            console.print(_summary(framework.name, rows))
            # The next build starts from a clean disk, as a user's would.
            shutil.rmtree(workdir / framework.name, ignore_errors=True)
        if shared and len(frameworks) > 1:
            rows += shared_rows(frameworks, alone, images_alone, workdir, status)
    return rows


def _built(build: Build) -> str:
    return "fresh venv + pip install, cold pip cache" + (
        "" if build.ok else f"; FAILED:\n{build.output_tail}"
    )


def _generate_proto(python: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen-proto"), str(python)], check=True, timeout=300)


def _summary(framework: str, rows: list[Row]) -> str:
    values = {r.measure: r.value for r in rows if r.framework == framework}
    return (
        f"{framework}: built in {values.get('build_s', '?')} s, "
        f"{values.get('env_size_bytes', 0) / GIB:.2f} GiB, "
        f"import {values.get('import_cold_s', '?')} s cold / "
        f"{values.get('import_warm_s', '?')} s warm"
    )


ENGINES = ("docker", "podman")
# pip's own report of each download: "Downloading torch-2.14.1-….whl (899.7 MB)", decimal units.
PIP_DOWNLOAD = re.compile(r"Downloading \S+ \((\d+(?:\.\d+)?) (kB|MB|GB)\)")
PIP_UNITS = {"kB": 10**3, "MB": 10**6, "GB": 10**9}
SERVING_TIMEOUT_S = 300


def container_engine() -> tuple[str, str]:
    """(engine, its version): FWBENCH_CONTAINER_ENGINE when set, else docker when its daemon
    answers, else podman. Chosen explicitly and recorded, because the numbers differ by engine."""
    wanted = os.environ.get("FWBENCH_CONTAINER_ENGINE", "")
    if wanted and wanted not in ENGINES:
        raise FrictionError(
            f"FWBENCH_CONTAINER_ENGINE={wanted!r}: expected one of {', '.join(ENGINES)}"
        )
    said = []
    for engine in [wanted] if wanted else ENGINES:
        try:
            result = subprocess.run(
                [engine, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except FileNotFoundError:
            said.append(f"`{engine}` is not installed")
            continue
        if result.returncode == 0:
            return engine, result.stdout.strip()
        said.append(f"`{engine} version` says: {_tail(result.stderr or result.stdout, 2)}")
    raise FrictionError(
        "--mode docker needs a running container engine (a Docker daemon, or podman); "
        + "; ".join(said)
        + "\nUse --mode venv on this machine."
    )


def image_build(engine: str, image: str, dockerfile: str, cache: bool, status) -> tuple[Build, int]:
    """One build of the compose file's image on the host network (as scripts/compose-e2e builds
    it), with or without the engine's layer cache: (the build, bytes pip said it downloaded)."""
    cmd = [engine, "build", "--network", "host", "--pull=never", "-f", dockerfile, "-t", image]
    cmd += [] if cache else ["--no-cache"]
    # BUILDAH_FORMAT=docker: podman's default OCI format drops HEALTHCHECK.
    env = os.environ | {"BUILDAH_FORMAT": "docker"}
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    downloaded = 0
    start = time.perf_counter()
    with subprocess.Popen(
        [*cmd, "."], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    ) as process:
        for line in process.stdout:
            if line.strip():
                tail.append(line.rstrip())
                status.update(escape(f"{image}: {line.strip()[:100]}"))
            downloaded += sum(
                round(float(n) * PIP_UNITS[unit]) for n, unit in PIP_DOWNLOAD.findall(line)
            )
    build = Build(process.returncode == 0, time.perf_counter() - start, "\n".join(tail))
    return build, downloaded


def image_layers(engine: str, image: str) -> list[tuple[int, str]]:
    """(bytes, instruction) of each layer that holds files, newest first."""
    result = subprocess.run(
        [
            engine,
            "history",
            "--no-trunc",
            "--human=false",
            "--format",
            "{{.Size}}\t{{.CreatedBy}}",
            image,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    layers = []
    for line in result.stdout.splitlines():
        size, _, created_by = line.partition("\t")
        if int(size) > 0:
            layers.append((int(size), " ".join(created_by.split())[:80]))
    return layers


def seconds_to_serving(engine: str, image: str) -> float:
    """From `run -d` of the image to its healthcheck command answering SERVING, polled through
    `exec` (about 0.3 s a poll on podman, which bounds the resolution)."""
    name = f"fwbench-friction-{os.getpid()}"
    start = time.perf_counter()
    subprocess.run([engine, "run", "-d", "--name", name, image], capture_output=True, check=True)
    try:
        probe = [
            engine,
            "exec",
            name,
            "python",
            "-m",
            "services.common.healthcheck",
            "127.0.0.1:50051",
        ]
        while subprocess.run(probe, capture_output=True).returncode != 0:
            if time.perf_counter() - start > SERVING_TIMEOUT_S:
                return math.nan
            time.sleep(0.1)
        return time.perf_counter() - start
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True)


def measure_docker(frameworks: list[Framework], console: Console) -> list[Row]:
    """Per framework, with docker or podman: the image of docker-compose.yml built cold (no layer
    cache) and warm (again, cached), its size, its layers, what pip downloaded for it, and the time
    from starting a container to its gRPC health answering SERVING."""
    engine, version = container_engine()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    rows: list[Row] = []
    with console.status("friction") as status:
        for framework in frameworks:
            name = framework.name
            image, dockerfile = compose[name]["image"], compose[name]["build"]["dockerfile"]
            rows += code_rows(name)
            rows.append(Row(name, "engine", f"{engine} {version}", "", "the container engine"))
            cold, downloaded = image_build(engine, image, dockerfile, False, status)
            if not cold.ok:
                rows.append(
                    Row(name, "build_s", round(cold.seconds, 1), "s", f"FAILED: {cold.output_tail}")
                )
                continue
            warm, _ = image_build(engine, image, dockerfile, True, status)
            size = subprocess.run(
                [engine, "image", "inspect", "--format", "{{.Size}}", image],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            layers = image_layers(engine, image)
            rows += [
                Row(name, "build_s", round(cold.seconds, 1), "s", f"{engine} build --no-cache"),
                Row(name, "build_warm_s", round(warm.seconds, 1), "s", f"{engine} build, cached"),
                Row(name, "image_size_bytes", int(size.stdout), "bytes", image),
                Row(
                    name,
                    "image_layers",
                    len(layers),
                    "count",
                    "; ".join(f"{b / GIB:.2f} GiB {c}" for b, c in layers),
                ),
                Row(name, "largest_layer_bytes", max(b for b, _ in layers), "bytes", ""),
                Row(
                    name,
                    "downloaded_bytes",
                    downloaded,
                    "bytes",
                    "sum of pip's `Downloading … (size)` lines of the cold build",
                ),
                Row(
                    name,
                    "up_to_serving_s",
                    round(seconds_to_serving(engine, image), 2),
                    "s",
                    f"{engine} run -d → healthcheck SERVING",
                ),
            ]
    return rows


# ---- output --------------------------------------------------------------------------------------

# (measure prefix, label, scale, format) for the table and the report, in this order.
DISPLAY = (
    ("build_s", "environment build, s", 1, "{:.1f}"),
    ("engine", "container engine", None, "{}"),
    ("build_warm_s", "image rebuild, cached, s", 1, "{:.1f}"),
    ("image_size_bytes", "image size, GiB", 1 / GIB, "{:.2f}"),
    ("image_layers", "image layers holding files", 1, "{:.0f}"),
    ("largest_layer_bytes", "largest layer, GiB", 1 / GIB, "{:.2f}"),
    ("downloaded_bytes", "downloaded by pip, GiB", 1 / GIB, "{:.2f}"),
    ("up_to_serving_s", "container start to SERVING, s", 1, "{:.2f}"),
    ("env_size_bytes", "environment on disk, GiB", 1 / GIB, "{:.2f}"),
    ("distributions", "distributions installed", 1, "{:.0f}"),
    ("installed_bytes", "installed by distributions, GiB", 1 / GIB, "{:.2f}"),
    ("nvidia_cuda_bytes", "NVIDIA/CUDA libraries, GiB", 1 / GIB, "{:.2f}"),
    ("cuda_majors", "CUDA majors installed", None, "{}"),
    ("image_cuda_majors", "CUDA majors in the GPU image", None, "{}"),
    ("image_resolves", "GPU image requirements resolve", None, "{}"),
    ("image_duplicated", "GPU image: libraries for two CUDA majors", 1, "{:.0f}"),
    ("image_downgraded", "GPU images together: downgraded", 1, "{:.0f}"),
    ("protobuf_version", "protobuf installed", None, "{}"),
    ("protobuf_accepted", "protobuf the framework accepts", None, "{}"),
    ("import_cold_s", "import, cold, s", 1, "{:.2f}"),
    ("import_warm_s", "import, warm (median), s", 1, "{:.2f}"),
    ("time_to_first_step_s", "time to first step, s", 1, "{:.1f}"),
    ("code_lines", "code lines (trainer + models)", 1, "{:.0f}"),
    ("friction_comments", "`# friction:` workarounds", 1, "{:.0f}"),
    ("resolves", "pip resolves", None, "{}"),
    ("pip_check", "pip check", None, "{}"),
    ("downgraded", "downgraded vs own venv", 1, "{:.0f}"),
    ("duplicated", "duplicated libraries", 1, "{:.0f}"),
    ("one_process", "one process: imports + a step", None, "{}"),
)


# Measures whose detail the report spells out under the table.
EXPLAINED = (
    "resolves",
    "pip_check",
    "downgraded",
    "duplicated",
    "image_duplicated",
    "image_downgraded",
)


def frame(rows: list[Row]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(r) for r in rows])


def table(friction: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(columns, rows) of the side-by-side view: one row per measure (`measure[model]` and
    `one_process[order]` once per model and order), one column per framework and the shared
    environment."""
    frameworks = list(dict.fromkeys(friction["framework"]))
    values = {(r.framework, r.measure): r.value for r in friction.itertuples()}
    out = []
    for prefix, label, scale, fmt in DISPLAY:
        measures = [m for m in friction["measure"] if m == prefix or m.startswith(prefix + "[")]
        for measure in dict.fromkeys(measures):
            name = label + (f" · {measure[len(prefix) + 1 : -1]}" if measure != prefix else "")
            cells = [
                _cell(values[(f, measure)], scale, fmt) if (f, measure) in values else ""
                for f in frameworks
            ]
            out.append([name, *cells])
    return ["measure", *frameworks], out


def _cell(value, scale, fmt: str) -> str:
    if scale is None:
        return {"True": "yes", "False": "no"}.get(str(value), str(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "—" if math.isnan(number) else fmt.format(number * scale)


def markdown(friction: pd.DataFrame) -> list[str]:
    """The report's section: the table, then the shared-environment findings in words."""
    columns, rows = table(friction)
    lines = ["## Install friction", "", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines.append("")
    notes = friction[
        friction["measure"].isin(EXPLAINED) | friction["measure"].str.startswith("one_process")
    ]
    for row in notes.itertuples():
        if isinstance(row.detail, str) and row.detail:
            lines.append(f"- {row.framework} · {row.measure}: {row.value} — {row.detail}")
    lines += [
        "",
        "Builds use a cold pip cache of their own and this machine's package indexes; import "
        "times exclude interpreter start-up; time to first step is a fresh worker process "
        "(import + data + model build + first step) on tiny synthetic data. Code lines count "
        "neither blank lines, comments nor docstrings.",
        "",
    ]
    return lines


def print_table(friction: pd.DataFrame, console: Console) -> None:
    columns, rows = table(friction)
    view = Table(title="install friction", show_lines=False)
    for column in columns:
        view.add_column(column, justify="left" if column == "measure" else "right")
    for row in rows:
        view.add_row(*row)
    console.print(view)


def run(args: argparse.Namespace, console: Console) -> int:
    """`fwbench friction`."""
    from orchestrator import report

    frameworks = [FRAMEWORKS[name] for name in args.frameworks]
    if args.mode == "docker":
        rows = measure_docker(frameworks, console)
    else:
        rows = measure_venv(frameworks, args.models, console, shared=not args.no_shared)
    args.out.mkdir(parents=True, exist_ok=True)
    friction = frame(rows)
    friction.to_csv(args.out / "friction.csv", index=False)
    print_table(friction, console)
    report.render(args.out)
    console.print(f"Friction in {args.out}/friction.csv and {args.out}/report.md")
    return 0
