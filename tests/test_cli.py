"""The command line refuses what it can before any service starts, with one clear error each,
and never leaves a results directory behind for a run that did not start."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.inputs import options
from orchestrator.running import launchers
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


def unused_port() -> int:
    """A port that was free a moment ago: nothing listens there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # waits out the 15 s a starting container gets
def test_nothing_listening_fails_in_seconds_and_leaves_no_results(tmp_path):
    port = unused_port()
    out = tmp_path / "out"
    start = time.monotonic()
    output = refused(
        "run", "--frameworks", "pytorch", "--launcher", "remote",
        "--service", f"pytorch=127.0.0.1:{port}", "--out", out,
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert f"the pytorch service at 127.0.0.1:{port} did not answer" in output
    assert not out.exists()


@pytest.mark.parametrize("prefix", ["", launchers.DNS_PREFIX])
def test_a_host_that_does_not_resolve_fails_at_once_naming_it(tmp_path, prefix):
    # .invalid never resolves (RFC 2606). It used to wait out the 15 s a starting service gets.
    service = f"pytorch={prefix}no-such-host.invalid:50051"
    start = time.monotonic()
    output = refused(
        "run", "--frameworks", "pytorch", "--launcher", "remote", "--service", service,
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert time.monotonic() - start < launchers.REMOTE_CONNECT_TIMEOUT_S
    assert f"--service {service}: the host no-such-host.invalid does not resolve" in output
    assert not (tmp_path / "out").exists()


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate and its key, made with the openssl CLI (an EC key: fast)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_files_that_tls_cannot_use_are_refused_before_any_service_is_asked(tmp_path):
    # A file that is no certificate used to fail every handshake, for 15 s, as "did not answer".
    ca, ca_key = self_signed(tmp_path, "ca")
    client, _ = self_signed(tmp_path, "client")
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    remote = ["run", "--frameworks", "pytorch", "--launcher", "remote", "--out", tmp_path / "out"]
    remote += ["--service", f"pytorch=127.0.0.1:{unused_port()}"]
    start = time.monotonic()
    output = refused(*remote, "--tls-ca", not_pem)
    assert time.monotonic() - start < launchers.REMOTE_CONNECT_TIMEOUT_S
    assert f"--tls-ca (or $FWBENCH_TLS_CA) {not_pem}: holds no PEM certificate" in output
    assert f"{ca_key}: holds no PEM certificate" in refused(*remote, "--tls-ca", ca_key)
    assert "--tls-cert and --tls-key go together" in refused(
        *remote, "--tls-ca", ca, "--tls-cert", client
    )
    mismatched = refused(*remote, "--tls-ca", ca, "--tls-cert", client, "--tls-key", ca_key)
    pair = f"--tls-cert {client} and --tls-key {ca_key}: not a PEM certificate and its private key"
    assert pair in mismatched
    assert not (tmp_path / "out").exists()


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


def test_a_last_batch_of_one_image_is_refused_before_any_service_is_asked(tmp_path):
    # The services refuse it too (datasets.check), but only once they run. A remote service where
    # nothing listens: had the check waited for the services, this would be "did not answer".
    remote = ["run", "--frameworks", "pytorch", "--launcher", "remote"]
    remote += ["--service", f"pytorch=127.0.0.1:{unused_port()}", "--out", tmp_path / "out"]
    output = refused(*remote, "--train-limit", "65", "--batch-size", "32")
    assert (
        "--train-limit 65 with --batch-size 32: the last batch of every epoch would hold 1 image, "
        "on which BatchNorm cannot train; use --train-limit 64 or 66, or another --batch-size"
    ) in output
    # Without --train-limit, the whole training split is what is batched.
    data = tmp_path / "odd"
    images, labels = datasets.synthetic_split(0, 1, 33)
    datasets.write(
        data,
        {"train_images": images, "train_labels": labels % 2,
         "test_images": images[:4], "test_labels": labels[:4] % 2},
        ["a", "b"], "odd", {},
    )  # fmt: skip
    output = refused(*remote, "--dataset", data, "--batch-size", "32")
    assert f"the 33 training images of {data} with --batch-size 32" in output
    assert "use --train-limit 32, or another --batch-size" in output
    assert not (tmp_path / "out").exists()


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
