"""Keras models for 32x32x3 inputs: fwbench's canonical definitions, or keras.applications' as-is.

canonical: functional Keras models built from services/common/architectures.py. Layer names are
the canonical layer paths with '_' for '.', plus the module (`layer1_0_conv2_conv`,
`layer1_0_conv2_bn`, `fc_linear`), which is how the shared initial weights find their layers.
library: keras.applications with its defaults (weights=None, softmax output), which is what
Keras users try first.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

from fwbench.v1 import trainer_pb2 as pb
from services.common import architectures as arch
from services.common import model_report, weights
from services.common.weights import KERAS_AXES, from_torch, to_torch

APPLICATIONS = {
    "resnet50": keras.applications.ResNet50,
    "vgg19": keras.applications.VGG19,
    "mobilenet": keras.applications.MobileNet,
    "mobilenet_v2": keras.applications.MobileNetV2,
}
DEFAULT_INIT = "Keras defaults: glorot uniform kernels, zero biases"
# What describe() cannot read off the layers.
LIBRARY_FACTS = {
    "resnet50": {
        "definition": "keras.applications.ResNet50",
        "resnet_variant": "v1 (stride on the first 1x1 conv)",
    },
    "vgg19": {"definition": "keras.applications.VGG19 (flatten 1x1x512 before the head)"},
    "mobilenet": {
        "definition": "keras.applications.MobileNet (1x1 conv as the classifier)",
        "mobilenet_version": "v1, width 1.0, ReLU6",
    },
    "mobilenet_v2": {
        "definition": "keras.applications.MobileNetV2",
        "mobilenet_version": "v2, width 1.0",
    },
}
LIBRARY_PADDING = "'same' (at stride 2 the odd pixel goes bottom/right only)"
# Keras updates moving_variance with the biased batch variance, PyTorch with the unbiased one: a
# difference of the frameworks that identical definitions cannot remove (eval-mode only).
BN_RUNNING_VARIANCE = "updated with the biased batch variance"


def _keras_name(path: str, module: str) -> str:
    return f"{path.replace('.', '_')}_{module}"


def _activation(name: str, layer_name: str) -> layers.Layer:
    return layers.ReLU(max_value=6.0 if name == "relu6" else None, name=layer_name)


def _conv(x, c: arch.Conv, path: str):
    # friction: stride 1 'same' pads kernel//2 on every side, as PyTorch does. Stride 2 'same'
    # would pad only bottom/right, so pad symmetrically by hand and convolve 'valid'.
    if c.stride > 1 and c.padding:
        x = layers.ZeroPadding2D(c.padding, name=_keras_name(path, "pad"))(x)
    padding = "same" if c.stride == 1 else "valid"
    name = _keras_name(path, "conv")
    if c.depthwise:
        x = layers.DepthwiseConv2D(c.kernel, c.stride, padding, use_bias=c.bias, name=name)(x)
    else:
        x = layers.Conv2D(c.c_out, c.kernel, c.stride, padding, use_bias=c.bias, name=name)(x)
    if c.bn:
        x = layers.BatchNormalization(
            # friction: opposite momentum conventions: Keras weighs the old statistic.
            momentum=1 - arch.BN_MOMENTUM,
            epsilon=arch.BN_EPSILON,
            name=_keras_name(path, "bn"),
        )(x)
    if c.act:
        x = _activation(c.act, _keras_name(path, "act"))(x)
    return x


def _unit(x, unit: arch.Unit):
    match unit:
        case arch.Conv():
            return _conv(x, unit, unit.name)
        case arch.Block():
            out = x
            for c in unit.convs:
                out = _conv(out, c, f"{unit.name}.{c.name}")
            if unit.residual:
                shortcut = (
                    _conv(x, unit.shortcut, f"{unit.name}.{unit.shortcut.name}")
                    if unit.shortcut
                    else x
                )
                out = layers.Add(name=f"{unit.name}_add")([out, shortcut])
            if unit.post_act:
                out = _activation(unit.post_act, f"{unit.name}_act")(out)
            return out
        case arch.MaxPool():
            if unit.padding:
                x = layers.ZeroPadding2D(unit.padding, name=f"{unit.name}_pad")(x)
            return layers.MaxPooling2D(unit.kernel, unit.stride, name=unit.name)(x)
        case arch.GlobalAvgPool():
            return layers.GlobalAveragePooling2D(name=unit.name)(x)
        case arch.Flatten():
            return layers.Flatten(name=unit.name)(x)
        case arch.Dense():
            x = layers.Dense(unit.c_out, name=_keras_name(unit.name, "linear"))(x)
            return _activation(unit.act, _keras_name(unit.name, "act"))(x) if unit.act else x
    raise TypeError(f"no Keras layer for {unit!r}")


def canonical(architecture: arch.Architecture) -> keras.Model:
    inputs = keras.Input((arch.IMAGE_SIZE, arch.IMAGE_SIZE, arch.IMAGE_CHANNELS), name="images")
    x = inputs
    for unit in architecture.units:
        x = _unit(x, unit)
    return keras.Model(inputs, x, name=architecture.name)


def load_canonical(
    model: keras.Model, architecture: arch.Architecture, weights: dict[str, np.ndarray]
) -> None:
    """Sets every weight of a canonical model to `weights` (canonical names, PyTorch layouts)."""
    # The canonical order within a layer is Keras' get_weights order: kernel, bias; and gamma,
    # beta, moving mean, moving variance.
    for (path, module), tensors in itertools.groupby(
        arch.tensors(architecture), key=lambda t: (t.layer, t.module)
    ):
        model.get_layer(_keras_name(path, module)).set_weights(
            [from_torch(weights[t.name], t.role, KERAS_AXES) for t in tensors]
        )


def canonical_weights(model: keras.Model, spec: pb.ModelSpec) -> dict[str, np.ndarray]:
    """The canonical tensors of a canonical model (what load_canonical sets), PyTorch layouts."""
    architecture = arch.get(spec.name, spec.num_classes)
    out = {}
    for (path, module), tensors in itertools.groupby(
        arch.tensors(architecture), key=lambda t: (t.layer, t.module)
    ):
        values = model.get_layer(_keras_name(path, module)).get_weights()
        for tensor, value in zip(tensors, values, strict=True):
            out[tensor.name] = to_torch(np.asarray(value, np.float32), tensor.role, KERAS_AXES)
    return out


# keras.applications' ImageNet weights without the top, as keras.utils.get_file caches them.
LIBRARY_WEIGHTS = {
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "mobilenet": "mobilenet_1_0_224_tf_no_top.h5",
    "mobilenet_v2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
}


def library_pretrained(spec: pb.ModelSpec) -> keras.Model:
    """keras.applications' model with its ImageNet weights (without the top), read from Keras'
    own cache (KERAS_HOME/models), and a head of spec.num_classes drawn by Keras' initialiser
    (seeded by build): the ImageNet top is made for 224-pixel inputs."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    path = weights.cached(
        home / "models" / LIBRARY_WEIGHTS[spec.name],
        "keras.applications",
        "fetch it once where the service runs (keras.applications."
        f"{APPLICATIONS[spec.name].__name__}(weights='imagenet', include_top=False)) or copy it "
        "there; KERAS_HOME moves the cache",
    )
    base = APPLICATIONS[spec.name](
        weights=str(path),
        include_top=False,
        input_shape=(arch.IMAGE_SIZE, arch.IMAGE_SIZE, arch.IMAGE_CHANNELS),
        pooling="avg",
    )
    return keras.Model(base.input, layers.Dense(spec.num_classes, name="predictions")(base.output))


def build(spec: pb.ModelSpec, seed: int) -> keras.Model:
    # Seeds Keras' own initialisers (init 'framework', library models).
    keras.utils.set_random_seed(seed)
    if spec.architecture == "library" and spec.init == "pretrained":
        return library_pretrained(spec)
    if spec.architecture == "library":
        return APPLICATIONS[spec.name](
            weights=None,
            input_shape=(arch.IMAGE_SIZE, arch.IMAGE_SIZE, arch.IMAGE_CHANNELS),
            classes=spec.num_classes,
        )
    architecture = arch.get(spec.name, spec.num_classes)
    model = canonical(architecture)
    if spec.init in ("shared", "pretrained"):
        load_canonical(model, architecture, weights.initial(spec, seed))
    return model


def _output_positions(layer: layers.Layer) -> int:
    shape = layer.output.shape  # (batch, height, width, channels) or (batch, features)
    return shape[1] * shape[2] if len(shape) == 4 else 1


def _facts(spec: pb.ModelSpec) -> dict[str, str]:
    if spec.architecture == "library":
        return {
            "padding": LIBRARY_PADDING,
            "initializer": DEFAULT_INIT,
            "output": "logits",
        } | LIBRARY_FACTS[spec.name]
    return model_report.canonical_facts(spec, DEFAULT_INIT)


def describe(model: keras.Model, spec: pb.ModelSpec) -> dict:
    convs = [
        layer for layer in model.layers if isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D)
    ]
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    facts = _facts(spec)
    if getattr(model.layers[-1], "activation", None) is keras.activations.softmax:
        facts["output"] = "probabilities (softmax)"
    # Every Keras weight that is not trainable here is BatchNorm state, not a parameter.
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return model_report.description(
        facts,
        conv_biases=[layer.use_bias for layer in convs],
        dense_widths=[tuple(layer.kernel.shape) for layer in dense],
        # Keras' momentum weighs the old statistic; reported as the new one's weight, like PyTorch.
        norms=[
            (1 - layer.momentum, layer.epsilon)
            for layer in model.layers
            if isinstance(layer, layers.BatchNormalization)
        ],
        dropout_rates=[layer.rate for layer in model.layers if isinstance(layer, layers.Dropout)],
        bn_running_variance=BN_RUNNING_VARIANCE,
        total_params=trainable,
        trainable_params=trainable,
        non_trainable_state=sum(math.prod(w.shape) for w in model.non_trainable_weights),
        weight_layers=[
            (math.prod(layer.kernel.shape), _output_positions(layer)) for layer in convs + dense
        ],
    )
