"""Keras models for 32x32x3 inputs and 10 classes.

Provisional: keras.applications as-is; the canonical definitions shared with PyTorch replace this
(issue: model parity).
"""

from __future__ import annotations

import keras

from fwbench.v1 import trainer_pb2 as pb

_APPLICATIONS = {
    "resnet50": keras.applications.ResNet50,
    "vgg19": keras.applications.VGG19,
    "mobilenet": keras.applications.MobileNet,
    "mobilenet_v2": keras.applications.MobileNetV2,
}


def build(spec: pb.ModelSpec, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return _APPLICATIONS[spec.name](weights=None, input_shape=(32, 32, 3), classes=spec.num_classes)


def describe(model: keras.Model, spec: pb.ModelSpec) -> dict:
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    non_trainable = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    return {
        "total_params": trainable,
        "trainable_params": trainable,
        "non_trainable_state": non_trainable,
        "layer_count": sum(
            1
            for layer in model.layers
            if isinstance(
                layer, keras.layers.Conv2D | keras.layers.Dense | keras.layers.BatchNormalization
            )
        ),
    }
