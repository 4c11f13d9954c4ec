"""One training step of keras.applications' MobileNetV2, as a user's first script would take it.

fwbench friction's shared-environment probe runs it after importing every framework in one
interpreter, to see whether the frameworks can train side by side (services/<framework>/smoke.py).
"""

from __future__ import annotations

import keras
import numpy as np


def train_one_step() -> None:
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.train_on_batch(np.zeros((8, 32, 32, 3), "float32"), np.zeros(8, "int64"))
