"""`fwbench friction`: the whole venv-mode measurement on tiny pure-Python "frameworks" (real
venvs, real pip, real interpreters: seconds, not minutes), and the metadata and size logic on the
real environments that set-up built. The full measurement of PyTorch and TensorFlow takes about
ten minutes and 8 GB of temporary disk, too much for every CI run: `make friction` runs it."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

from orchestrator import cli, friction, report
from orchestrator.friction.docker import build_command, history_layers
from orchestrator.report import install_friction
from tests.conftest import ROOT, venv_python

# "beta" crashes (SIGSEGV) when imported after "alpha", as TensorFlow then torchvision does:
# the order-dependent crash that the shared-environment probe exists to find.
BETA_IMPORTS = (
    "import os, signal, sys, tomli\nif 'six' in sys.modules: os.kill(os.getpid(), signal.SIGSEGV)"
)


def _framework(tmp_path: Path, name: str, requirements: str, imports: str, step: str):
    path = tmp_path / f"{name}-requirements.txt"
    path.write_text(requirements)
    return friction.Subject(
        name=name,
        requirements=path,
        image_requirements=path,
        distribution=name,
        imports=imports,
        step=step,
        service=False,
    )


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """friction's temporary directories go here, so that the test can see them removed."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.mark.slow
def test_friction_on_tiny_frameworks(tmp_path, workdir):
    # alpha pins tomli low; beta alone gets the newest: together, pip must downgrade beta's.
    alpha = _framework(tmp_path, "alpha", "six==1.17.0\ntomli==2.4.0\n", "import six", "six.b('x')")
    beta = _framework(tmp_path, "beta", "tomli>=2.4.0\n", BETA_IMPORTS, "tomli.loads('a = 1')")
    console = Console(record=True, width=200)
    rows = friction.measure_venv([alpha, beta], [], console, warm_imports=2)
    table = friction.frame(rows)
    value = {(r.framework, r.measure): r.value for r in table.itertuples()}

    for name in ("alpha", "beta"):
        assert value[(name, "build_s")] > 0
        assert value[(name, "env_size_bytes")] > 100_000
        assert value[(name, "distributions")] >= 2  # pip itself, and what was asked
        assert 0 < value[(name, "import_cold_s")] < 30
        assert 0 < value[(name, "import_warm_s")] < 30
        assert value[(name, "cuda_majors")] == "none"
        assert value[(name, "protobuf_version")] == "not installed"
        assert value[(name, "image_resolves")] is True
        assert value[(name, "image_duplicated")] == 0

    shared = "alpha+beta"
    assert value[(shared, "resolves")] is True
    assert value[(shared, "pip_check")] == "ok"
    assert value[(shared, "downgraded")] == 1
    [downgrade] = table[(table.framework == shared) & (table.measure == "downgraded")].detail
    assert downgrade.startswith("tomli ") and "(beta alone) → 2.4.0" in downgrade
    assert value[(shared, "image_downgraded")] == 1  # the images' resolution: the same story
    assert value[(shared, "one_process[beta then alpha]")] == "ok"
    crash = value[(shared, "one_process[alpha then beta]")]
    assert crash == "crashed: SIGSEGV (exit -11)"
    [reached] = table[table.measure == "one_process[alpha then beta]"].detail
    assert reached.startswith("done: imported alpha;")
    assert reached.endswith(
        "; while importing beta; at `if 'six' in sys.modules: os.kill(os.getpid(), signal.SIGSEGV)`"
    )
    assert list(workdir.iterdir()) == []  # every temporary environment is gone

    friction.print_table(table, console)
    screen = console.export_text()
    assert "one process: imports + a step · alpha then beta" in screen
    assert "crashed: SIGSEGV" in screen
    out = tmp_path / "out"
    out.mkdir()
    table.to_csv(out / "friction.csv", index=False)
    markdown = report.render(out).markdown_path.read_text()
    assert "## Install friction" in markdown
    assert "pip resolves" in markdown


@pytest.mark.framework
def test_the_frameworks_own_environments(tmp_path):
    """Metadata and sizes of the real venvs of `make setup` (read, never imported)."""
    torch = friction.inspect_environment(ROOT / ".venvs" / "pytorch", "torch")
    assert {"torch", "torchvision", "nvidia-cudnn-cu13"} <= set(torch.versions)
    assert torch.cuda_majors == [13]
    assert torch.nvidia_cuda_bytes > 2**30  # cuDNN alone is about 1 GiB
    assert torch.size_bytes > torch.nvidia_cuda_bytes
    assert torch.protobuf_version == torch.versions["protobuf"]
    assert "torch" not in torch.protobuf_accepted  # torch does not depend on protobuf
    assert torch.duplicates == []

    tf = friction.inspect_environment(ROOT / ".venvs" / "tensorflow", "tensorflow")
    assert tf.protobuf_accepted["tensorflow"] == ">=6.31.1,<8.0.0"
    assert next(iter(tf.protobuf_accepted)) == "tensorflow"  # the framework's own range first
    rows = {r.measure: r for r in friction.environment_rows("tensorflow", tf, "tensorflow")}
    assert rows["protobuf_accepted"].value == ">=6.31.1,<8.0.0"
    assert "grpcio-tools: >=7.35.1,<8.0.0" in rows["protobuf_accepted"].detail
    assert rows["distributions"].value == len(tf.versions) > 10


def test_cuda_majors_come_from_suffixes_and_runtime_versions():
    versions = {
        "nvidia-cublas-cu12": "12.9.1.4",
        "nvidia-cufft": "12.0.0.61",  # CUDA 13's cuFFT: its own numbering, not a CUDA major
        "cuda-toolkit": "13.0.3",
        "nvidia-ml-py": "13.615.71",  # NVML bindings, no CUDA library
    }
    assert friction.cuda_majors(versions) == [12, 13]
    assert not friction.is_cuda_library("nvidia-ml-py")
    assert friction.is_cuda_library("nvidia-cudnn-cu13") and friction.is_cuda_library(
        "cuda-bindings"
    )


def test_code_counts_skip_blanks_comments_and_docstrings(tmp_path):
    path = tmp_path / "trainer.py"
    path.write_text(
        '"""Module docstring,\non two lines."""\n'
        "\n"
        "import os  # a comment after code still leaves a code line\n"
        "# friction: TensorFlow needs this because ...\n"
        "def f():\n"
        '    """Docstring."""\n'
        "    #friction: another workaround\n"
        "    return {\n"
        "        'multi': 'line',\n"
        "    }\n"
        "# not a friction: comment\n"
    )
    assert friction.code_counts(path) == (5, 2)


def test_code_rows_of_the_real_services():
    for framework in ("pytorch", "tensorflow"):
        rows = {r.measure: r for r in friction.code_rows(framework)}
        assert rows["code_lines"].value > 50
        assert rows["code_lines"].detail.endswith(
            "trainer.py + services/" + framework + "/models.py"
        )
        assert rows["friction_comments"].value >= 0


@pytest.mark.framework
def test_time_to_first_step_from_a_real_service(tmp_path):
    python = Path(venv_python("pytorch"))
    console = Console()
    with console.status("test") as status:
        [row] = friction.first_step_rows("pytorch", python, ["mobilenet_v2"], tmp_path, status)
    assert row.measure == "time_to_first_step_s[mobilenet_v2]"
    assert not math.isnan(row.value) and 0 < row.value < 120
    assert row.detail.startswith("on cpu: import ")


@pytest.mark.parametrize(("argv", "install"), [([], "venv"), (["--install", "docker"], "docker")])
def test_install_is_chosen_by_install_or_its_earlier_name_mode(argv, install):
    parsed = cli.parser().parse_args(["friction", *argv])
    assert parsed.install == install
    assert cli.parser().parse_args(["friction", "--mode", install]).install == install


def _friction_docker(tmp_path, **env) -> tuple[subprocess.CompletedProcess, str]:
    fwbench = [sys.executable, "-c", "from orchestrator.cli import main; main()"]
    result = subprocess.run(
        [*fwbench, "friction", "--install", "docker", "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | env,
    )
    return result, " ".join(result.stdout.split())


def test_the_docker_install_says_clearly_that_it_needs_an_engine(tmp_path):
    # A PATH with neither docker nor podman on it: the machine of someone without an engine.
    (tmp_path / "bin").mkdir()
    result, output = _friction_docker(tmp_path, PATH=str(tmp_path / "bin"))
    assert result.returncode == 2, output + result.stderr
    assert (
        "--install docker needs a running container engine (a Docker daemon, or podman)" in output
    )
    assert "`docker` is not installed" in output and "`podman` is not installed" in output
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "friction.csv").exists()


def test_docker_mode_refuses_an_unknown_engine_by_name(tmp_path):
    result, output = _friction_docker(tmp_path, FWBENCH_CONTAINER_ENGINE="rkt")
    assert result.returncode == 2, output + result.stderr
    assert "FWBENCH_CONTAINER_ENGINE='rkt': expected one of docker, podman" in output
    assert not (tmp_path / "out" / "friction.csv").exists()


def test_friction_table_lays_out_models_and_orders_as_rows():
    table = pd.DataFrame(
        [
            ("pytorch", "build_s", 88.0, "s", ""),
            ("tensorflow", "build_s", 40.0, "s", ""),
            ("pytorch", "env_size_bytes", 5 * 2**30, "bytes", ""),
            ("pytorch", "time_to_first_step_s[resnet50]", 3.0, "s", ""),
            ("tensorflow", "time_to_first_step_s[resnet50]", math.nan, "s", "INTERNAL: ..."),
            ("pytorch+tensorflow", "one_process[tensorflow then pytorch]", "crashed", "", ""),
        ],
        columns=["framework", "measure", "value", "unit", "detail"],
    )
    columns, rows = install_friction.table(table)
    assert columns == ["measure", "pytorch", "tensorflow", "pytorch+tensorflow"]
    assert rows == [
        ["environment build, s", "88.0", "40.0", ""],
        ["environment on disk, GiB", "5.00", "", ""],
        ["time to first step, s · resnet50", "3.0", "—", ""],
        ["one process: imports + a step · tensorflow then pytorch", "", "", "crashed"],
    ]


def test_docker_mode_reads_layer_bytes_from_each_engines_history():
    # podman 4.3 prints `{{.Size}}` for people ("0 B") whatever --human says: its JSON is read.
    podman = (
        '[{"size": 0, "CreatedBy": "/bin/sh -c #(nop) CMD [\\"python\\"]"},'
        ' {"size": 4837056000, "CreatedBy": "/bin/sh -c python3 -m venv /opt/venv  && pip"}]'
    )
    assert history_layers("podman", podman) == [
        (4837056000, "/bin/sh -c python3 -m venv /opt/venv && pip")
    ]
    docker = "0\t/bin/sh -c #(nop) CMD\n142059520\t/bin/sh -c apt-get update\n"
    assert history_layers("docker", docker) == [(142059520, "/bin/sh -c apt-get update")]


def test_docker_mode_builds_each_framework_as_compose_and_the_e2e_do():
    # services/Dockerfile is every framework's: the compose service's build args make it this one.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    command = build_command("podman", "fwbench/jax:friction-cold", compose["jax"]["build"], False)
    assert command[:6] == ["podman", "build", "--network", "host", "--pull=never", "-f"]
    assert command[6] == "services/Dockerfile" and command[-2:] == ["--no-cache", "."]
    args = [command[i + 1] for i, word in enumerate(command) if word == "--build-arg"]
    assert args == [
        "FRAMEWORK=jax",
        "CUDA_VERSION=13.0.2",
        "REQUIREMENTS=services/jax/requirements-gpu.txt",
    ]
    assert "--no-cache" not in build_command("docker", "x", compose["jax"]["build"], True)
