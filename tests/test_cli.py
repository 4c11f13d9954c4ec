"""The command line refuses what it can before any service starts, with one clear error each,
and never leaves a results directory behind for a run that did not start."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.inputs import options
from services.common import datasets, frameworks
from services.common import spec as specs
from tests.conftest import fwbench


def refused(*argv, timeout_s: float = 60) -> str:
    """Runs fwbench and returns what it printed, asserting the exit code 2 and no traceback."""
    result = fwbench(*argv, timeout_s=timeout_s)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, output
    assert "Traceback" not in output
    return output


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ("pytorch=localhost:abc", "port 'abc' is not a number in 1..65535"),
        ("pytorch=localhost:99999", "port '99999' is not a number in 1..65535"),
        ("pytorch=localhost", "expected NAME=HOST:PORT"),
        ("mxnet=localhost:50051", "'mxnet' is not a framework; expected one of pytorch"),
    ],
)
def test_a_bad_service_address_is_refused_up_front(tmp_path, service, message):
    out = tmp_path / "out"
    argv = ["run", "--frameworks", "pytorch", "--launcher", "remote", "--service", service]
    assert message in refused(*argv, "--out", out)
    assert not out.exists()


def test_service_addresses_need_the_remote_launcher_and_every_framework(tmp_path):
    out = tmp_path / "out"
    assert "--service is for --launcher remote" in refused(
        "run", "--service", "pytorch=localhost:1", "--out", out
    )
    others = [name for name in frameworks.NAMES if name != "pytorch"]
    flags = " ".join(f"--service {name}=HOST:PORT" for name in others)
    assert f"needs an address for {', '.join(others)}: pass {flags}" in refused(
        "run", "--launcher", "remote", "--service", "pytorch=localhost:1", "--out", out
    )
    assert not out.exists()


@pytest.mark.slow  # waits out the 15 s a starting container gets
def test_nothing_listening_fails_in_seconds_and_leaves_no_results(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    start = time.monotonic()
    output = refused(
        "run", "--frameworks", "pytorch", "--launcher", "remote",
        "--service", f"pytorch=127.0.0.1:{port}", "--out", out,
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert f"the pytorch service at 127.0.0.1:{port} did not answer" in output
    assert not out.exists()


def test_an_unusable_out_is_one_clear_error(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert f"--out {a_file} is a file" in refused("run", "--out", a_file)
    assert "--out /proc/x: cannot write in /proc" in refused("run", "--out", "/proc/x")
    prepare = refused("data", "prepare", "--source", "synthetic", "--out", a_file)
    assert f"--out {a_file} is a file, not a directory" in prepare


def test_limits_beyond_the_dataset_name_its_size(tmp_path):
    output = refused("run", "--train-limit", "50001", "--out", tmp_path / "x")
    assert "--train-limit 50001: the train split of synthetic has only 50,000 images" in output
    data = tmp_path / "tiny"
    datasets.write(
        data,
        {
            "train_images": datasets.synthetic_split(0, 1, 40)[0],
            "train_labels": datasets.synthetic_split(0, 1, 40)[1] % 3,
            "test_images": datasets.synthetic_split(0, 2, 8)[0],
            "test_labels": datasets.synthetic_split(0, 2, 8)[1] % 3,
        },
        ["cat", "dog", "emu"],
        "tiny",
        {},
    )
    output = refused("run", "--dataset", data, "--test-limit", "9", "--out", tmp_path / "y")
    assert f"--test-limit 9: the test split of {data} has only 8 images" in output
    assert not (tmp_path / "y").exists()


def test_the_head_follows_the_dataset_classes(tmp_path):
    data = tmp_path / "three"
    images, labels = datasets.synthetic_split(0, 1, 30)
    datasets.write(
        data,
        {
            "train_images": images,
            "train_labels": labels % 3,
            "test_images": images[:6],
            "test_labels": labels[:6] % 3,
        },
        ["a", "b", "c"],
        "three",
        {},
    )
    args = cli.parser().parse_args(["run", "--dataset", str(data), "--out", str(tmp_path / "o")])
    spec = options.build_spec(args)
    assert spec.model.num_classes == 3


def test_a_changed_dataset_is_refused_before_any_service_starts(tmp_path):
    data = tmp_path / "d"
    images, labels = datasets.synthetic_split(0, 1, 30)
    datasets.write(
        data,
        {
            "train_images": images,
            "train_labels": labels,
            "test_images": images,
            "test_labels": labels,
        },
        [f"c{i}" for i in range(10)],
        "d",
        {},
    )
    array = data / "train_images.npy"
    raw = bytearray(array.read_bytes())
    raw[-1] ^= 0xFF
    array.write_bytes(bytes(raw))
    output = refused("run", "--dataset", data, "--out", tmp_path / "o")
    assert "does not match meta.json" in output and "fwbench data prepare" in output
    assert not (tmp_path / "o").exists()


def test_help_shows_the_defaults_of_the_one_source():
    text = " ".join(fwbench("run", "--help").stdout.split())
    assert f"passes over the training data (default: {specs.DEFAULTS['epochs']})" in text
    assert f"base learning rate (default: {specs.DEFAULTS['optimizer']['learning_rate']})" in text
    assert f"(default: {specs.effective_default('model.init')})" in text
    assert "examples:" in fwbench("--help").stdout
    assert fwbench("--version").stdout.startswith("fwbench ")


def test_resume_refuses_a_changed_spec(tmp_path):
    results_dir = tmp_path / "r"
    results_dir.mkdir()
    (results_dir / "events.jsonl").write_text("")
    (results_dir / "context.json").write_text(
        json.dumps({"spec": {}, "frameworks": ["pytorch"], "models": ["vgg19"], "repeats": 1})
    )
    output = refused("run", "--resume", results_dir, "--epochs", "3")
    assert "keeps the spec it started with; drop --epochs" in output


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ("[1", "context.json is not JSON (Expecting ',' delimiter"),
        (
            '{"command": "fwbench debug-probe"}',
            "context.json lacks spec, frameworks, models, repeats",
        ),
    ],
    ids=["not JSON", "not a run's"],
)
def test_resume_of_a_set_fwbench_run_did_not_write_is_a_clear_error(tmp_path, context, message):
    results_dir = tmp_path / "r"
    results_dir.mkdir()
    (results_dir / "events.jsonl").write_text("")
    (results_dir / "context.json").write_text(context)
    output = refused("run", "--resume", results_dir)
    assert message in output


def test_report_of_a_folder_without_results_is_a_clear_error(tmp_path: Path):
    assert "has no events.jsonl" in refused("report", tmp_path)


def test_a_framework_named_twice_is_refused(tmp_path):
    out = tmp_path / "out"
    output = refused("run", "--frameworks", "pytorch,pytorch", "--out", out)
    assert "framework pytorch named twice; name each once" in output
    assert not out.exists()


@pytest.mark.framework
def test_a_service_of_another_framework_is_refused_naming_the_address_and_both(tmp_path, services):
    # One framework's service given as another's: its numbers would be recorded under the wrong
    # name. Describe says what it serves, before anything trains.
    address = f"127.0.0.1:{services('jax').port}"
    out = tmp_path / "out"
    output = refused(
        "run", "--frameworks", "pytorch", "--launcher", "remote", "--service",
        f"pytorch={address}", "--out", out, timeout_s=180,
    )  # fmt: skip
    assert f"the service at {address} was given as pytorch but serves jax" in output
    assert not (out / "runs.csv").exists()
