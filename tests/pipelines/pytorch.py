"""The PyTorch trainer's Pipeline, batch by batch (see tests/pipelines/__init__.py)."""

from __future__ import annotations

import numpy as np
import torch

from services.common import schedule
from services.pytorch.trainer import Pipeline
from tests.pipelines import arguments

dataset, out, seed, batch_size = arguments()
n = len(dataset.train_labels)
steps = schedule.steps_per_epoch(n, batch_size)
arrays = {}
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
