"""--install docker: each framework's image built with the machine's container engine (a Docker
daemon, or podman where none answers), cold and warm, its size and layers, what pip downloaded for
it, and the time from starting a container to its gRPC health answering SERVING."""

from __future__ import annotations

import collections
import json
import math
import os
import re
import subprocess
import time

import yaml
from rich.console import Console
from rich.markup import escape

from orchestrator.friction.code import code_rows
from orchestrator.friction.common import (
    GIB,
    OUTPUT_TAIL_LINES,
    ROOT,
    FrictionError,
    Row,
    Subject,
    output_tail,
)
from orchestrator.friction.venv import Build

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
        said.append(f"`{engine} version` says: {output_tail(result.stderr or result.stdout, 2)}")
    raise FrictionError(
        "--install docker needs a running container engine (a Docker daemon, or podman); "
        + "; ".join(said)
        + "\nUse --install venv on this machine."
    )


def build_command(engine: str, image: str, build: dict, cache: bool) -> list[str]:
    """The engine's command that builds a compose service's `build:` (its dockerfile and args) as
    image on the host network, as scripts/compose-e2e builds it; run from the repository root."""
    cmd = [engine, "build", "--network", "host", "--pull=never", "-f", build["dockerfile"]]
    for key, value in build.get("args", {}).items():
        cmd += ["--build-arg", f"{key}={value}"]
    cmd += ["-t", image]
    return cmd + ([] if cache else ["--no-cache"]) + ["."]


def image_build(engine: str, image: str, build: dict, cache: bool, status) -> tuple[Build, int]:
    """One build of the compose file's image (build_command), with or without the engine's layer
    cache: (the build, bytes pip said it downloaded)."""
    cmd = build_command(engine, image, build, cache)
    # BUILDAH_FORMAT=docker: podman's default OCI format drops HEALTHCHECK.
    env = os.environ | {"BUILDAH_FORMAT": "docker"}
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    downloaded = 0
    start = time.perf_counter()
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
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
    # podman (4.3) formats `{{.Size}}` for people whatever --human says ("0 B", "4.84 GB"); its
    # JSON has bytes. Docker's template with --human=false has bytes, its JSON a person's size.
    if engine == "podman":
        command = [engine, "history", "--no-trunc", "--format", "json", image]
    else:
        command = [engine, "history", "--no-trunc", "--human=false"]
        command += ["--format", "{{.Size}}\t{{.CreatedBy}}", image]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return history_layers(engine, result.stdout)


def history_layers(engine: str, history: str) -> list[tuple[int, str]]:
    """(bytes, instruction) of the layers with files, from image_layers' `history` output."""
    if engine == "podman":
        entries = [(e["size"], e.get("CreatedBy", "")) for e in json.loads(history)]
    else:
        entries = []
        for line in history.splitlines():
            size, _, created_by = line.partition("\t")
            entries.append((int(size), created_by))
    return [(size, " ".join(by.split())[:80]) for size, by in entries if size > 0]


def seconds_to_serving(engine: str, image: str) -> tuple[float, str]:
    """(seconds, "") from `run -d` of the image to its healthcheck command answering SERVING,
    polled through `exec` (about 0.3 s a poll on podman, which bounds the resolution); (nan, why)
    when the container stops first, with its log's tail, or SERVING_TIMEOUT_S passes."""
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
            running = subprocess.run(
                [engine, "inspect", "--format", "{{.State.Running}}", name],
                capture_output=True,
                text=True,
            )
            if running.stdout.strip() != "true":
                logs = subprocess.run([engine, "logs", name], capture_output=True, text=True)
                said = output_tail(logs.stdout + logs.stderr, 3)
                return math.nan, f"FAILED: the container stopped before SERVING: {said}"
            if time.perf_counter() - start > SERVING_TIMEOUT_S:
                return math.nan, f"FAILED: not SERVING after {SERVING_TIMEOUT_S} s"
            time.sleep(0.1)
        return time.perf_counter() - start, ""
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True)


def measure_docker(frameworks: list[Subject], console: Console) -> list[Row]:
    """Per framework, with docker or podman: the image of docker-compose.yml built cold (no layer
    cache) and warm (again, cached), its size, its layers, what pip downloaded for it, and the time
    from starting a container to its gRPC health answering SERVING."""
    engine, version = container_engine()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    rows: list[Row] = []
    with console.status("friction") as status:
        for framework in frameworks:
            name = framework.name
            # services/Dockerfile, made this framework's by the service's build args.
            image, build = compose[name]["image"], compose[name]["build"]
            rows += code_rows(name)
            rows.append(Row(name, "engine", f"{engine} {version}", "", "the container engine"))
            # The cold build gets a tag of its own, removed once the warm one has the image's:
            # the warm build may reuse older cached layers, and the cold image would be left
            # behind untagged, gigabytes of them per framework.
            cold_image = f"{image.rpartition(':')[0]}:friction-cold"
            cold, downloaded = image_build(engine, cold_image, build, False, status)
            if not cold.ok:
                rows.append(
                    Row(name, "build_s", round(cold.seconds, 1), "s", f"FAILED: {cold.output_tail}")
                )
                continue
            warm, _ = image_build(engine, image, build, True, status)
            subprocess.run([engine, "rmi", cold_image], capture_output=True, timeout=600)
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
            ]
            serving_s, failure = seconds_to_serving(engine, image)
            rows.append(
                Row(
                    name,
                    "up_to_serving_s",
                    round(serving_s, 2),
                    "s",
                    failure or f"{engine} run -d → healthcheck SERVING",
                )
            )
    return rows
