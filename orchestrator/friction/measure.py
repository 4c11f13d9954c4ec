"""The measurements of the venv install (fresh environments) and the docker install (images)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from orchestrator.friction.code import code_rows
from orchestrator.friction.common import (
    GIB,
    ROOT,
    WARM_IMPORTS,
    Row,
    Subject,
)
from orchestrator.friction.environment import (
    downgrades,
    environment_rows,
    image_rows,
    inspect_environment,
    majors_text,
)
from orchestrator.friction.probes import (
    first_step_rows,
    import_rows,
    probe_one_process,
)
from orchestrator.friction.venv import Build, build_venv


def shared_rows(
    frameworks: list[Subject],
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
            Row(
                label, "cuda_majors", majors_text(env.cuda_majors), "", "of the installed libraries"
            ),
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
        rows.append(Row(label, "downgraded", *downgrades(env.versions, alone)))
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
        rows.append(Row(label, "image_downgraded", *downgrades(versions, images_alone)))
    return rows


def measure_venv(
    frameworks: list[Subject],
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
