"""Pretrained weights and checkpoints (services/common/weights.py, `--init pretrained --weights`,
`--save-weights`): the canonical file, its head replacement, its refusals, and every framework
loading it alike."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator import cli
from orchestrator.inputs import options, suite_file
from orchestrator.results import schema
from services.common import architectures, init, weights
from tests.conftest import ROOT, fwbench, venv_python

MODEL = "mobilenet_v2"


def canonical_file(tmp_path: Path, classes: int = 10, seed: int = 3) -> Path:
    tensors = init.initial_weights(architectures.get(MODEL, classes), seed)
    path = tmp_path / "start.npz"
    weights.save(path, MODEL, tensors, "test")
    return path


def test_a_canonical_file_reads_back_bit_for_bit_with_its_checksum(tmp_path):
    tensors = init.initial_weights(architectures.get(MODEL, 10), 3)
    path = tmp_path / "w.npz"
    digest = weights.save(path, MODEL, tensors, "test")
    assert digest == weights.sha256(path)
    read, meta = weights.read(path)
    assert (meta["model"], meta["num_classes"]) == (MODEL, 10)
    assert list(read) == list(tensors)
    assert all(np.array_equal(read[name], tensors[name]) for name in tensors)


def test_a_head_of_other_classes_is_replaced_by_the_seeded_shared_one_and_the_rest_kept(tmp_path):
    thousand = init.initial_weights(architectures.get(MODEL, 1000), 3)
    converted, done = weights.for_model(thousand, MODEL, 10, seed=7, where="w")
    fresh = init.initial_weights(architectures.get(MODEL, 10), 7)
    head = [t.name for t in architectures.tensors(architectures.get(MODEL, 10)) if "fc." in t.name]
    assert head and done.startswith("head fc replaced: 1000 -> 10 classes")
    for name in converted:
        expected = fresh[name] if name in head else thousand[name]
        assert np.array_equal(converted[name], expected), name


def test_a_tensor_of_the_wrong_shape_is_refused_naming_its_layer_and_both_shapes():
    tensors = init.initial_weights(architectures.get(MODEL, 10), 0)
    name = "block1.depthwise.conv.weight"
    assert name in tensors
    tensors[name] = np.zeros((32, 1, 5, 5), np.float32)
    with pytest.raises(weights.WeightsError) as raised:
        weights.for_model(tensors, MODEL, 10, seed=0, where="w.npz")
    assert str(raised.value) == (
        f"w.npz: layer block1.depthwise: {name} is 32 x 1 x 5 x 5, fwbench's canonical "
        f"{MODEL} has 32 x 1 x 3 x 3 there (PyTorch layout)"
    )


def test_a_missing_tensor_is_refused_naming_its_layer():
    tensors = init.initial_weights(architectures.get(MODEL, 10), 0)
    del tensors["block1.depthwise.bn.running_var"]
    with pytest.raises(
        weights.WeightsError, match=r"layer block1\.depthwise has no bn running_var"
    ):
        weights.for_model(tensors, MODEL, 10, seed=0, where="w.npz")


def test_init_pretrained_and_weights_ask_for_each_other(tmp_path):
    path = canonical_file(tmp_path)
    for argv, message in (
        (["--init", "pretrained"], "--init pretrained needs --weights FILE"),
        (["--weights", str(path)], "read only with --init pretrained"),
        (
            ["--init", "pretrained", "--weights", str(path), "--models", "resnet50"],
            "holds 'mobilenet_v2' weights, not 'resnet50'",
        ),
    ):
        done = fwbench("parity", "--frameworks", "pytorch", *argv)
        assert done.returncode == 2 and message in done.stderr + done.stdout, argv


def test_a_suite_file_starts_from_its_weights_as_the_command_line_does(tmp_path):
    path = canonical_file(tmp_path)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"name: tuned\nframeworks: [pytorch]\nmodels: [{MODEL}]\n"
        f"spec:\n  init: pretrained\n  weights: {path}\n"
    )
    run = suite_file.run_arguments(cli.parser().parse_args(["suite", str(suite)]))
    spec = options.validated(run, run.models)
    assert spec.model.weights_file == str(path.resolve())
    assert spec.model.weights_sha256 == weights.sha256(path)


def test_resume_refuses_weights_it_did_not_start_with(tmp_path):
    results_dir = tmp_path / "r"
    results_dir.mkdir()
    (results_dir / "events.jsonl").write_text("")
    (results_dir / "context.json").write_text(
        json.dumps({"spec": {}, "frameworks": ["pytorch"], "models": [MODEL], "repeats": 1})
    )
    done = fwbench("run", "--resume", str(results_dir), "--weights", str(canonical_file(tmp_path)))
    assert done.returncode == 2
    assert "keeps the spec it started with; drop --weights" in done.stderr + done.stdout


def pretrained_spec(path: Path):
    args = cli.parser().parse_args(
        ["parity", "--models", MODEL, "--init", "pretrained", "--weights", str(path)]
    )
    return options.validated(args, args.models)


def test_a_canonical_file_that_fits_is_used_in_place_and_another_head_converted_once(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(options, "CONVERTED_WEIGHTS_DIR", tmp_path / "converted")
    fits = canonical_file(tmp_path)
    spec = pretrained_spec(fits)
    assert spec.model.weights_file == str(fits.resolve())
    assert spec.model.weights_sha256 == weights.sha256(fits)
    other = canonical_file(tmp_path / "other", classes=100)
    spec = pretrained_spec(other)
    converted = Path(spec.model.weights_file)
    assert converted.parent == tmp_path / "converted"
    _, meta = weights.read(converted)
    assert meta["num_classes"] == 10 and "100 -> 10 classes" in meta["source"]


def run(tmp_path: Path, name: str, frameworks: str, *extra) -> Path:
    out = tmp_path / name
    done = fwbench(
        "run", "--frameworks", frameworks, "--models", MODEL, "--dataset", "synthetic",
        "--train-limit", "64", "--test-limit", "64", "--batch-size", "32", "--epochs", "1",
        "--device", "cpu", "--lr", "0.05", "--out", out, *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.mark.framework
def test_a_checkpoint_saved_by_pytorch_starts_tensorflow_and_jax_with_identical_logits(
    tmp_path, saved_run
):
    # saved_run (conftest): `run(..., "pytorch", "--save-weights", DIR)` as below, MODEL, DIR
    # beside it; once per session, test_interruptions reads it too.
    first, saved = saved_run, saved_run.parent / "checkpoints"
    runs = pd.read_csv(first / schema.RUNS_CSV)
    checkpoint = Path(runs.saved_weights_file[0])
    assert checkpoint.parent == saved.resolve()
    assert runs.saved_weights_sha256[0] == weights.sha256(checkpoint)
    trained_accuracy = runs.final_test_accuracy[0]

    # The parity check before training proves the two frameworks load it alike: eval-mode logits
    # of the probe batch within its tolerance; then each framework's baseline (epoch 0) is the
    # PyTorch model's final accuracy, on the same test images.
    second = run(
        tmp_path, "second", "tensorflow,jax", "--init", "pretrained", "--weights",
        checkpoint,
    )  # fmt: skip
    parity = pd.read_csv(second / schema.PARITY_CSV)
    assert (parity.verdict == "pass").all(), parity.to_string()
    print("max |logit difference| per pair:", parity.max_abs_logit_diff.tolist())
    epochs = pd.read_csv(second / schema.EPOCHS_CSV)
    baselines = epochs[epochs.epoch == 0].set_index("framework").test_accuracy
    assert set(baselines.index) == {"tensorflow", "jax"}
    assert (abs(baselines - trained_accuracy) <= 1 / 64).all(), baselines
    # Fine-tuning goes on learning where PyTorch stopped: every framework's training loss is
    # below PyTorch's over the epoch that made the checkpoint.
    first_loss = pd.read_csv(first / schema.EPOCHS_CSV).set_index("epoch").train_loss[1]
    tuned = epochs[epochs.epoch == 1].set_index("framework").train_loss
    print(f"training loss: {first_loss:.3f} (PyTorch, from scratch); fine-tuned: {tuned.to_dict()}")
    assert (tuned < first_loss).all(), (first_loss, tuned)
    second_runs = pd.read_csv(second / schema.RUNS_CSV)
    assert (second_runs.weights_sha256 == runs.saved_weights_sha256[0]).all()
    # The report: accuracy before and after training, per framework.
    report = (second / "report.md").read_text()
    assert "| test accuracy before training (epoch 0) |" in report
    assert "| test accuracy, last epoch |" in report


def library_file(
    tmp_path: Path, framework: str, classes: int = 10, kind: str = "canonical", model: str = MODEL
) -> Path:
    done = subprocess.run(
        [venv_python(framework), "-m", "tests.library_weights", framework, kind, model,
         str(classes), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return tmp_path


def equal_tensors(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[name], b[name]) for name in a)


@pytest.mark.framework
def test_a_torchvision_layout_state_dict_reads_without_torch_as_the_model_it_came_from(tmp_path):
    folder = library_file(tmp_path, "pytorch")
    converted, done, canonical = weights.convert(folder / "model.pth", MODEL, 10, seed=0)
    assert (done, canonical) == (weights.HEAD_KEPT, False)
    assert equal_tensors(converted, weights.read(folder / "expected.npz")[0])


@pytest.mark.framework
def test_a_keras_weights_file_reads_as_the_model_it_came_from(tmp_path):
    folder = library_file(tmp_path, "tensorflow")
    expected = weights.read(folder / "expected.npz")[0]
    assert equal_tensors(weights.read(folder / "converted.npz")[0], expected)


# Slow: a parity check in every framework; in `make test` the .pth file reads as the model it came
# from (above) and a checkpoint starts the other frameworks (below) with identical logits.
@pytest.mark.framework
@pytest.mark.slow
def test_every_framework_starts_from_a_torchvision_layout_file_with_identical_logits(tmp_path):
    # 100 classes in the file: the head is replaced, seeded, for synthetic data's 10.
    folder = library_file(tmp_path, "pytorch", classes=100)
    out = tmp_path / "parity"
    done = fwbench(
        "parity", "--frameworks", "pytorch,tensorflow,jax", "--models", MODEL, "--init",
        "pretrained", "--weights", folder / "model.pth", "--out", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    parity = pd.read_csv(out / schema.PARITY_CSV)
    assert (parity.verdict == "pass").all(), parity.to_string()
    print("max |logit difference|:", parity.max_abs_logit_diff.max())


@pytest.mark.framework
def test_a_torchvision_library_state_dict_is_refused_naming_the_first_layer_that_differs(
    tmp_path,
):
    # torchvision's VGG19 pools to 7 x 7 before a 25,088-wide classifier; fwbench's flattens
    # 1 x 1 x 512 (its mobilenet_v2 and resnet50 have the canonical layers, and load).
    folder = library_file(tmp_path, "pytorch", kind="library", model="vgg19")
    with pytest.raises(weights.WeightsError) as raised:
        weights.convert(folder / "library.pth", "vgg19", 10, seed=0)
    assert str(raised.value).startswith(
        f"--weights {folder / 'library.pth'}: layer fc1: the PyTorch state_dict's "
        "classifier.0.weight is 4096 x 25088 where fwbench's canonical vgg19 has "
    ), raised.value


@pytest.mark.framework
def test_library_weights_come_from_torchvisions_cache_and_without_them_the_run_names_the_file(
    tmp_path, monkeypatch
):
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    library = ("--architecture", "library", "--init", "pretrained")
    out = tmp_path / "missing"
    done = fwbench(
        "run", "--frameworks", "pytorch", "--models", MODEL, "--dataset", "synthetic",
        "--train-limit", "64", "--test-limit", "64", "--epochs", "1", "--device", "cpu",
        *library, "--out", out,
    )  # fmt: skip
    error = pd.read_csv(out / schema.RUNS_CSV).error[0]
    assert done.returncode != 0 and f"no file {home}/hub/checkpoints/mobilenet_v2-" in error, error
    assert "fwbench never downloads at run time" in error

    library_file(tmp_path, "pytorch", kind="cache")  # in TORCH_HOME: as if downloaded once
    out = run(tmp_path, "cached", "pytorch", *library)
    epochs = pd.read_csv(out / schema.EPOCHS_CSV)
    assert list(epochs.epoch) == [0, 1]
