"""The TensorFlow trainer's Pipeline, batch by batch (see tests/pipelines/__init__.py)."""

from __future__ import annotations

import numpy as np

from services.common import schedule
from services.tensorflow.trainer import Pipeline
from tests.pipelines import arguments

dataset, out, seed, batch_size = arguments()
n = len(dataset.train_labels)
steps = schedule.steps_per_epoch(n, batch_size)
arrays = {}
pipeline = Pipeline(dataset, batch_size, len(dataset.classes))
for augment in ("crop-flip", "none"):
    for epoch in (0, 1):
        pipeline.set_epoch(schedule.epoch_plan(seed, epoch, n, augment))
        for k in (0, steps - 1):
            arrays[f"u8_{augment}_e{epoch}_k{k}"] = pipeline.augmented(k).numpy()
    # What model.fit consumes: the epoch's dataset, iterated afresh after set_epoch.
    dataset = pipeline.train_dataset()
    for epoch in (0, 1):
        pipeline.set_epoch(schedule.epoch_plan(seed, epoch, n, augment))
        batches = list(dataset)
        assert len(batches) == steps, (len(batches), steps)
        x, y = batches[0]
        arrays[f"x_{augment}_e{epoch}"] = x.numpy()
        arrays[f"y_{augment}_e{epoch}"] = np.argmax(y.numpy(), axis=1)
np.savez(out, **arrays)
