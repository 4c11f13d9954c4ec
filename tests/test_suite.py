"""`fwbench suite`: the seed experiment as data, its validation, and a real run on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestrator import cli
from orchestrator.inputs import options, suite_file
from services.common import spec as specs
from tests.conftest import ROOT

SEED = ROOT / "suites" / "seed.yaml"
VALID = """\
name: tiny
frameworks: [pytorch]
models: [mobilenet_v2]
spec:
  epochs: 2
"""


def test_seed_suite_is_the_seed_experiment():
    seed = suite_file.load(SEED)
    assert seed.frameworks == ["pytorch", "tensorflow"]
    assert seed.models == ["resnet50", "vgg19", "mobilenet", "mobilenet_v2"]
    assert seed.repeats >= 5  # the report trims fastest and slowest from 5 repeats on
    assert seed.spec | {"dataset": "cifar10", "epochs": 5, "batch_size": 32} == seed.spec
    # Every value passes the same validation a run applies.
    args = cli.parser().parse_args(["suite", str(SEED), "--dataset", "synthetic"])
    run = suite_file.run_arguments(args)
    base = options.build_spec(run)
    for model in run.models:
        specs.validate(options.for_model(base, model))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nframeworks: [pytorch]\nmodel: [vgg19]\n", "model: unknown key (did you mean"),
        ("name: x\nmodels: [vgg19]\n", "frameworks: required"),
        ("name: x\nframeworks: [mxnet]\nmodels: [vgg19]\n", "frameworks: 'mxnet' is not one of"),
        ("name: x\nframeworks: [pytorch]\nmodels: [vgg16]\n", "(did you mean 'vgg19'?)"),
        ("name: x\nframeworks: pytorch\nmodels: [vgg19]\n", "frameworks: expected a non-empty"),
        (VALID + "repeats: 0\n", "repeats: expected an integer >= 1, got 0"),
        (VALID + "  batchsize: 64\n", "spec.batchsize: not an option of `fwbench run` (did you"),
        (VALID + "  batch: 64\n", "spec.batch: not an option"),  # no argparse abbreviations
        (
            VALID + "  batch_size: lots\n",
            "spec.batch_size: expected a whole number >= 1, got 'lots'",
        ),
        (VALID + "  batch_size: 3.5\n", "spec.batch_size: expected a whole number >= 1, got '3.5'"),
        (VALID + "  augment: mixup\n", "spec.augment: invalid choice: 'mixup'"),
        (VALID + "  compile: yes please\n", "spec.compile: expected true or false"),
        (VALID + "  lr: [0.1, 0.01]\n", "spec.lr: expected a single value"),
        ("name: x\nframeworks: [pytorch\n", "is not valid YAML"),
        ("- just\n- a list\n", "expected a mapping of name, description"),
    ],
)
def test_invalid_suites_name_the_bad_key(tmp_path, text, message):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(suite_file.SuiteError) as error:
        suite_file.load(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_the_command_line_reports_a_bad_suite_without_a_traceback(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(VALID + "  optimiser: adam\n")
    result = subprocess.run(
        [sys.executable, "-c", "from orchestrator.cli import main; main()", "suite", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "spec.optimiser: not an option of `fwbench run` (did you mean 'optimizer'?)" in (
        " ".join(result.stdout.split())
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_a_suite_without_epochs_announces_the_default_and_reaches_validation(tmp_path):
    # Neither the file nor the command line sets epochs: the announcement names the default,
    # then the bad dataset is refused as any bad input is (exit 2, no traceback).
    path = tmp_path / "suite.yaml"
    path.write_text(
        f"name: x\nframeworks: [pytorch]\nmodels: [vgg19]\nspec:\n  dataset: {tmp_path / 'none'}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", "from orchestrator.cli import main; main()", "suite", str(path),
         "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = " ".join((result.stdout + result.stderr).split())
    assert f"{specs.effective_default('epochs')} epoch(s)" in output
    assert result.returncode == 2 and "Traceback" not in output


def test_command_line_options_override_the_file_and_only_those(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(VALID + "  lr: 1e-3\n  compile: true\nrepeats: 3\n")
    argv = ["suite", str(path), "--epochs", "1", "--train-limit", "64", "--models", "vgg19"]
    run = suite_file.run_arguments(cli.parser().parse_args(argv))
    assert (run.epochs, run.train_limit, run.models) == (1, 64, ["vgg19"])
    # From the file (1e-3 is a string to YAML 1.1; it is parsed as --lr would parse it).
    assert (run.lr, run.compile, run.repeats, run.frameworks) == (1e-3, True, 3, ["pytorch"])
    # Neither in the file nor given: not set, so the spec takes spec.DEFAULTS.
    assert (run.batch_size, run.optimizer, run.launcher) == (None, None, "local")
    spec = options.build_spec(run)
    assert (spec.batch_size, spec.optimizer.name) == (32, "sgd")
    assert (spec.epochs, spec.optimizer.learning_rate, spec.compile) == (1, 1e-3, True)
    assert run.out == Path("results") / "tiny"


@pytest.mark.slow
@pytest.mark.framework
def test_seed_suite_runs_on_the_cpu_with_limits(tmp_path, real_cifar):
    """The seed suite itself, on real CIFAR-10 images, trimmed to one model and a CPU budget.
    The shared archive as the session prepared it (conftest's real_cifar): preparing what
    --dataset names is test_data's, and here it cost the suite 15 s more."""
    argv = ["suite", str(SEED), "--launcher", "local", "--dataset", str(real_cifar)]
    argv += ["--train-limit", "512"]
    argv += ["--test-limit", "256", "--epochs", "1", "--models", "mobilenet_v2"]
    argv += ["--repeats", "1", "--out", str(tmp_path / "seed-{time}")]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    # {time} is expanded once, and the suite file is kept beside the results it produced.
    [out] = tmp_path.glob("seed-2*")
    assert not (tmp_path / "seed-{time}").exists()
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["framework"]) == ["pytorch", "tensorflow"]
    assert (runs["status"] == "ok").all(), runs["error"].tolist()
    assert (runs["train_samples"] == 512).all() and (runs["epochs"] == 1).all()
    assert (out / "suite.yaml").read_text() == SEED.read_text()
    assert "## mobilenet_v2" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  probes: channel_order\n", "debug_probe.probes: expected a non-empty list"),
        ("  probes: [channel_order, nope]\n", "debug_probe.probes: probe nope not known"),
        ("  executions: [graph, graph]\n", "debug_probe.executions: execution graph named"),
        ("  modes: [jit]\n", "debug_probe.modes: execution jit not known"),  # the earlier name
        ("  model: vgg16\n", "debug_probe.model: invalid choice: 'vgg16'"),
        ("  batch_size: 0\n", "debug_probe.batch_size: must be >= 1, got 0"),
        ("  frameworks: [jax]\n", "debug_probe.frameworks: not an option of `fwbench debug-probe`"),
    ],
)
def test_invalid_debug_probe_keys_are_named(tmp_path, text, message):
    path = tmp_path / "suite.yaml"
    path.write_text(VALID + "debug_probe:\n" + text)
    with pytest.raises(suite_file.SuiteError) as error:
        suite_file.load(path)
    assert f"{path}: {message}" in str(error.value)


def test_a_debug_probe_key_keeps_the_small_jobs_defaults(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(
        VALID + "debug_probe:\n  probes: [channel_order]\n  modes: [graph]\n  device: cpu\n"
    )
    probe = suite_file.load(path).debug_probe
    assert (probe.probes, probe.executions, probe.device) == (["channel_order"], ["graph"], "cpu")
    assert (probe.batch_size, probe.model, probe.epochs) == (8, "mobilenet_v2", 1)
    assert probe.lr is None  # not given: spec.DEFAULTS
