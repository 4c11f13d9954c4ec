"""Every framework trains on the same batches: batch k of epoch e holds the same images, augmented
the same way, in PyTorch, TensorFlow and JAX.

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

from services.common import data as datasets
from services.common import schedule
from tests.conftest import FRAMEWORKS, ROOT, venv_python

SEED = 7
BATCH_SIZE = 32
TRAIN_SAMPLES = 100  # not a multiple of BATCH_SIZE: the short last batch is checked too
EPOCHS = (0, 1)

# Run in each framework's environment: argv = data_dir, out.npz, seed, batch size. Writes
# u8_<augment>_e<epoch>_k<batch> (uint8 NHWC after crop/flip) for the first and last batch, and
# x_<augment>_e<epoch> / y_<augment>_e<epoch> (float32 NHWC, labels) of batch 0 as training gets
# them.
PREAMBLE = """
import sys
from pathlib import Path

import numpy as np

from services.common import data as datasets
from services.common import schedule

data_dir, out, seed, batch_size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dataset = datasets.from_directory(data_dir)
n = len(dataset.train_labels)
steps = schedule.steps_per_epoch(n, batch_size)
arrays = {}
"""
SCRIPTS = {
    "pytorch": PREAMBLE
    + """
import torch

from services.pytorch.trainer import Pipeline

pipeline = Pipeline(dataset, torch.device("cpu"), batch_size)
for augment in ("crop-flip", "none"):
    for epoch in (0, 1):
        pipeline.set_epoch(schedule.epoch_plan(seed, epoch, n, augment))
        for k in (0, steps - 1):
            arrays[f"u8_{augment}_e{epoch}_k{k}"] = pipeline.augmented(k).numpy()
        x, y = pipeline.train_batch(0)
        arrays[f"x_{augment}_e{epoch}"] = x.permute(0, 2, 3, 1).numpy()  # NCHW -> NHWC
        arrays[f"y_{augment}_e{epoch}"] = y.numpy()
np.savez(out, **arrays)
""",
    "tensorflow": PREAMBLE
    + """
from services.tensorflow.trainer import Pipeline

pipeline = Pipeline(dataset, batch_size, len(dataset.classes))
for augment in ("crop-flip", "none"):
    for epoch in (0, 1):
        pipeline.set_epoch(schedule.epoch_plan(seed, epoch, n, augment))
        for k in (0, steps - 1):
            arrays[f"u8_{augment}_e{epoch}_k{k}"] = pipeline.augmented(k).numpy()
    # What model.fit consumes: one dataset over every epoch; epoch e starts at element e * steps.
    batches = list(pipeline.train_dataset(seed, 2, augment).take(steps + 1))
    for epoch in (0, 1):
        x, y = batches[epoch * steps]
        arrays[f"x_{augment}_e{epoch}"] = x.numpy()
        arrays[f"y_{augment}_e{epoch}"] = np.argmax(y.numpy(), axis=1)
np.savez(out, **arrays)
""",
    "jax": PREAMBLE
    + """
from services.jax.trainer import Pipeline

pipeline = Pipeline(dataset, batch_size)
for augment in ("crop-flip", "none"):
    for epoch in (0, 1):
        pipeline.set_epoch(schedule.epoch_plan(seed, epoch, n, augment))
        for k in (0, steps - 1):
            arrays[f"u8_{augment}_e{epoch}_k{k}"] = np.asarray(pipeline.augmented(k))
        x, y = pipeline.train_batch(0)
        arrays[f"x_{augment}_e{epoch}"] = np.asarray(x)
        arrays[f"y_{augment}_e{epoch}"] = np.asarray(y)
np.savez(out, **arrays)
""",
}


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
        command = [venv_python(framework), "-c", SCRIPTS[framework]]
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
        for framework in FRAMEWORKS[1:]:
            np.testing.assert_allclose(
                batches[FRAMEWORKS[0]][f"x_{augment}_e{epoch}"],
                batches[framework][f"x_{augment}_e{epoch}"],
                rtol=0,
                atol=1e-6,
                err_msg=framework,
            )
