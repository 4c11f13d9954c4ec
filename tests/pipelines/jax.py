"""The JAX trainer's Pipeline, batch by batch (see tests/pipelines/__init__.py)."""

from __future__ import annotations

import numpy as np

from services.common import schedule
from services.jax.trainer import Pipeline
from tests.pipelines import arguments

dataset, out, seed, batch_size = arguments()
n = len(dataset.train_labels)
steps = schedule.steps_per_epoch(n, batch_size)
arrays = {}
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
