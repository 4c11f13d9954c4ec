"""What got installed: read from the installed metadata, never imported."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from orchestrator.friction.common import (
    CUDA_SUFFIX,
    CUDA_VERSIONED,
    GIB,
    NOT_CUDA,
    PIP_TIMEOUT_S,
    ROOT,
    Row,
    output_tail,
)
from orchestrator.friction.venv import size_on_disk


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
        Row(
            framework, "cuda_majors", majors_text(env.cuda_majors), "", "of the installed libraries"
        ),
        Row(framework, "protobuf_version", env.protobuf_version or "not installed"),
        Row(
            framework,
            "protobuf_accepted",
            framework_range or f"any ({distribution} does not depend on protobuf)",
            "",
            "; ".join(others),
        ),
    ]


def majors_text(majors: list[int]) -> str:
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
        return False, {}, output_tail(result.stdout + result.stderr)
    installs = json.loads(report.read_text())["install"]
    versions = {
        canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs
    }
    return True, versions, ""


def downgrades(together: dict[str, str], alone: dict[str, dict[str, str]]) -> tuple:
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
            majors_text(cuda_majors(versions)),
            "",
            f"{len(cuda)} nvidia-*/cuda-* distributions in the resolution",
        ),
        Row(label, "image_duplicated", len(twice), "count", "; ".join(twice)),
    ]
    return rows, versions
