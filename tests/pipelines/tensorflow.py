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
    # What model.fit consumes: one dataset over every epoch; epoch e starts at element e * steps.
    batches = list(pipeline.train_dataset(seed, 2, augment).take(steps + 1))
    for epoch in (0, 1):
        x, y = batches[epoch * steps]
        arrays[f"x_{augment}_e{epoch}"] = x.numpy()
        arrays[f"y_{augment}_e{epoch}"] = np.argmax(y.numpy(), axis=1)
np.savez(out, **arrays)
