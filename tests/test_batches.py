"""Both frameworks train on the same batches: batch k of epoch e holds the same images, augmented
the same way, in PyTorch and TensorFlow.

Each framework's own input pipeline (services/<framework>/trainer.py `Pipeline`) runs in its own
virtualenv on a dataset prepared on disk, and the batches it cuts are compared byte for byte with
each other and with the NumPy reference of the shared schedule (`schedule.apply_numpy`); the
normalised float batches — taken from the path each trainer feeds its model — within 1e-6.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.common import datasets, schedule
from tests.conftest import FRAMEWORKS, ROOT, venv_python

SEED = 7
BATCH_SIZE = 32
TRAIN_SAMPLES = 100  # not a multiple of BATCH_SIZE: the short last batch is checked too
EPOCHS = (0, 1)

# Every test here runs each framework's own pipeline in its environment.
pytestmark = pytest.mark.framework


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    rng_images, rng_labels = datasets.synthetic_split(SEED, 1, TRAIN_SAMPLES)
    test_images, test_labels = datasets.synthetic_split(SEED, 2, 20)
    out = tmp_path_factory.mktemp("batches") / "small"
    datasets.write(
        out,
        {
            "train_images": rng_images,
            "train_labels": rng_labels,
            "test_images": test_images,
            "test_labels": test_labels,
        },
        [f"class{i}" for i in range(10)],
        "small",
        {"source": {"kind": "synthetic", "seed": SEED}},
    )
    return out


@pytest.fixture(scope="module")
def batches(small_dataset, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """{framework: the arrays its pipeline produced}."""
    produced = {}
    for framework in FRAMEWORKS:
        out = tmp_path_factory.mktemp(framework) / "batches.npz"
        # tests/pipelines/<framework>.py, in the framework's own environment.
        command = [venv_python(framework), "-m", f"tests.pipelines.{framework}"]
        result = subprocess.run(
            [*command, str(small_dataset), str(out), str(SEED), str(BATCH_SIZE)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{framework} pipeline script failed:\n{result.stderr}"
        with np.load(out) as arrays:
            produced[framework] = dict(arrays)
    return produced


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


@pytest.mark.parametrize("augment", ["crop-flip", "none"])
def test_uint8_batches_are_byte_identical_across_frameworks_and_the_reference(
    small_dataset, batches, augment
):
    images = np.asarray(datasets.from_directory(small_dataset).train_images)
    steps = schedule.steps_per_epoch(TRAIN_SAMPLES, BATCH_SIZE)
    for epoch in EPOCHS:
        plan = schedule.epoch_plan(SEED, epoch, TRAIN_SAMPLES, augment)
        for k in (0, steps - 1):
            part = plan.batch(k, BATCH_SIZE)
            reference = schedule.apply_numpy(images, part)
            key = f"u8_{augment}_e{epoch}_k{k}"
            for framework in FRAMEWORKS:
                got = batches[framework][key]
                assert got.dtype == np.uint8 and got.shape == reference.shape, (framework, key)
                assert sha256(got) == sha256(reference), (framework, key)
            # Crop-flip really moves pixels; "none" is the images themselves.
            unaugmented = np.array_equal(reference, images[part.order])
            assert unaugmented == (augment == "none"), key
    first = [batches["pytorch"][f"u8_{augment}_e{epoch}_k0"] for epoch in EPOCHS]
    assert not np.array_equal(*first), "epochs 0 and 1 should start with different batches"


@pytest.mark.parametrize("augment", ["crop-flip", "none"])
def test_normalised_batches_and_labels_agree(small_dataset, batches, augment):
    dataset = datasets.from_directory(small_dataset)
    images = np.asarray(dataset.train_images)
    mean = np.asarray(dataset.mean, np.float32)
    std = np.asarray(dataset.std, np.float32)
    for epoch in EPOCHS:
        plan = schedule.epoch_plan(SEED, epoch, TRAIN_SAMPLES, augment).batch(0, BATCH_SIZE)
        reference = (schedule.apply_numpy(images, plan).astype(np.float32) / 255 - mean) / std
        for framework in FRAMEWORKS:
            x = batches[framework][f"x_{augment}_e{epoch}"]
            assert x.dtype == np.float32 and x.shape == reference.shape, framework
            np.testing.assert_allclose(x, reference, rtol=0, atol=1e-6, err_msg=framework)
            labels = batches[framework][f"y_{augment}_e{epoch}"]
            np.testing.assert_array_equal(labels, dataset.train_labels[plan.order])
        np.testing.assert_allclose(
            batches["pytorch"][f"x_{augment}_e{epoch}"],
            batches["tensorflow"][f"x_{augment}_e{epoch}"],
            rtol=0,
            atol=1e-6,
        )
