"""Flax NNX models for 32x32x3 inputs: fwbench's canonical definitions.

canonical: nnx.Modules built from services/common/architectures.py, NHWC with HWIO kernels. Their
attribute paths are the canonical layer paths (`layer1_0.conv2.conv.kernel`), which is how the
shared initial weights find their variables.
library: JAX has no model library for these models (Flax ships layers, not ResNet-50 or VGG19),
so `library` is the canonical definition with Flax's own initialisers, as PyTorch does for the
MobileNet v1 that torchvision lacks.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fwbench.v1 import trainer_pb2 as pb
from services.common import architectures as arch
from services.common import model_report, weights
from services.common.spec import SpecError
from services.common.weights import FLAX_AXES, from_torch, to_torch

DEFAULT_INIT = "Flax defaults: lecun normal kernels, zero biases"
LIBRARY_FACTS = {"definition": "fwbench canonical (JAX has no model library for these models)"}
# Flax, like Keras, updates the running variance with the biased batch variance; PyTorch with the
# unbiased one (eval-mode only).
BN_RUNNING_VARIANCE = "updated with the biased batch variance"
# Canonical (PyTorch) parameter names -> Flax variable names.
FLAX_NAMES = {
    ("conv", "weight"): "kernel",
    ("conv", "bias"): "bias",
    ("linear", "weight"): "kernel",
    ("linear", "bias"): "bias",
    ("bn", "weight"): "scale",
    ("bn", "bias"): "bias",
    ("bn", "running_mean"): "mean",
    ("bn", "running_var"): "var",
}


def _activation(name: str | None, x: jax.Array) -> jax.Array:
    if name == "relu":
        return jax.nn.relu(x)
    if name == "relu6":
        return jax.nn.relu6(x)
    return x


class ConvBNAct(nnx.Module):
    def __init__(self, c: arch.Conv, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.conv = nnx.Conv(
            c.c_in,
            c.c_out,
            (c.kernel, c.kernel),
            strides=c.stride,
            # The canonical convention: symmetric padding, never 'SAME' (bottom/right at stride 2).
            padding=[(c.padding, c.padding)] * 2,
            feature_group_count=c.groups,
            use_bias=c.bias,
            dtype=dtype,
            rngs=rngs,
        )
        if c.bn:
            self.bn = nnx.BatchNorm(
                c.c_out,
                # friction: Flax's momentum is Keras' convention, the weight of the old statistic.
                momentum=1 - arch.BN_MOMENTUM,
                epsilon=arch.BN_EPSILON,
                # friction: Flax's default variance, E[x²] - E[x]², cancels digits where the mean
                # is large against the spread; PyTorch and Keras compute mean((x - mean)²).
                use_fast_variance=False,
                dtype=dtype,
                rngs=rngs,
            )
        self.act = c.act

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return _activation(self.act, x)


class Block(nnx.Module):
    """A ResNet bottleneck, a MobileNet separable block or a MobileNetV2 inverted residual."""

    def __init__(self, block: arch.Block, dtype: jnp.dtype, rngs: nnx.Rngs):
        # Attributes by the convs' own names, so that paths are the canonical tensor names.
        self.branch = tuple(c.name for c in block.convs)
        for c in block.convs:
            setattr(self, c.name, ConvBNAct(c, dtype, rngs))
        self.shortcut = block.shortcut.name if block.shortcut else None
        if block.shortcut:
            setattr(self, block.shortcut.name, ConvBNAct(block.shortcut, dtype, rngs))
        self.residual = block.residual
        self.post_act = block.post_act

    def __call__(self, x: jax.Array) -> jax.Array:
        return _activation(self.post_act, arch.block_sum(self, x))


class Dense(nnx.Module):
    def __init__(self, d: arch.Dense, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.linear = nnx.Linear(d.c_in, d.c_out, dtype=dtype, rngs=rngs)
        self.act = d.act

    def __call__(self, x: jax.Array) -> jax.Array:
        return _activation(self.act, self.linear(x))


class Canonical(nnx.Module):
    """The architecture's units in order; units with parameters are attributes by their name."""

    def __init__(self, architecture: arch.Architecture, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.units = tuple(architecture.units)
        for unit in architecture.units:
            match unit:
                case arch.Conv():
                    setattr(self, unit.name, ConvBNAct(unit, dtype, rngs))
                case arch.Block():
                    setattr(self, unit.name, Block(unit, dtype, rngs))
                case arch.Dense():
                    setattr(self, unit.name, Dense(unit, dtype, rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        for unit in self.units:
            match unit:
                case arch.MaxPool():
                    # Max pooling pads with -inf, as PyTorch's MaxPool2d does.
                    padding = [(unit.padding, unit.padding)] * 2
                    x = nnx.max_pool(x, (unit.kernel,) * 2, (unit.stride,) * 2, padding)
                case arch.GlobalAvgPool():
                    x = x.mean(axis=(1, 2))
                case arch.Flatten():
                    x = x.reshape(x.shape[0], -1)
                case _:
                    x = getattr(self, unit.name)(x)
        return x


def load_canonical(
    model: Canonical, architecture: arch.Architecture, weights: dict[str, np.ndarray]
) -> None:
    """Sets every variable of `model` (abstract, from nnx.eval_shape) to `weights` (canonical
    names, PyTorch layouts)."""
    for tensor in arch.tensors(architecture):
        node = model
        for part in (*tensor.layer.split("."), tensor.module):
            node = getattr(node, part)
        variable = getattr(node, FLAX_NAMES[tensor.module, tensor.param])
        value = from_torch(weights[tensor.name], tensor.role, FLAX_AXES)
        if variable.shape != value.shape:
            raise RuntimeError(
                f"canonical weight {tensor.name} {value.shape} does not fit {variable.shape}"
            )
        variable.set_value(jnp.asarray(value))
    unset = [
        "/".join(map(str, path))
        for path, leaf in jax.tree.leaves_with_path(nnx.state(model))
        if not isinstance(leaf, jax.Array)
    ]
    if unset:
        raise RuntimeError(f"the canonical weights leave variables unset: {unset}")


def _variable(model: Canonical, tensor: arch.Tensor) -> nnx.Variable:
    node = model
    for part in (*tensor.layer.split("."), tensor.module):
        node = getattr(node, part)
    return getattr(node, FLAX_NAMES[tensor.module, tensor.param])


def canonical_weights(model: Canonical, spec: pb.ModelSpec) -> dict[str, np.ndarray]:
    """The canonical tensors of a canonical model (what load_canonical sets), PyTorch layouts."""
    architecture = arch.get(spec.name, spec.num_classes)
    out = {}
    for tensor in arch.tensors(architecture):
        value = np.asarray(_variable(model, tensor).get_value(), np.float32)
        out[tensor.name] = to_torch(value, tensor.role, FLAX_AXES)
    return out


def build(spec: pb.ModelSpec, seed: int, dtype: jnp.dtype = jnp.float32) -> Canonical:
    """The model in training mode; `dtype` is the compute dtype (parameters stay float32)."""
    if spec.architecture == "library" and spec.init == "pretrained":
        # No machine has them: the spec, not the machine, is at fault.
        raise SpecError(
            "model.init: pretrained, with architecture library: JAX has no model library, so no "
            "library weights; leave jax out of --frameworks, or use architecture canonical with a "
            "weights file"
        )
    architecture = arch.get(spec.name, spec.num_classes)
    if spec.architecture == "canonical" and spec.init in ("shared", "pretrained"):
        # Shapes only: Flax's initialisers would draw every weight just to be overwritten.
        model = nnx.eval_shape(lambda: Canonical(architecture, dtype, nnx.Rngs(seed)))
        load_canonical(model, architecture, weights.initial(spec, seed))
        return model
    # friction: Flax's initialisers draw through XLA programs (threefry, truncated normal) that
    # compile per parameter shape: ~30 s for MobileNetV2 on 2 busy cores, eager or under one jit.
    return Canonical(architecture, dtype, nnx.Rngs(seed))


def _weight_layer_positions(model: Canonical) -> list[tuple[int, int]]:
    """(weight elements, output positions per sample) of every convolution and matrix product of
    one 32x32 forward pass, read off the program XLA is given."""
    model.eval()
    graphdef, state = nnx.split(model)
    image = jnp.zeros((1, arch.IMAGE_SIZE, arch.IMAGE_SIZE, arch.IMAGE_CHANNELS))
    program = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, image)
    model.train()
    found = []
    for equation in program.eqns:
        if equation.primitive.name in ("conv_general_dilated", "dot_general"):
            kernel = equation.invars[1].aval.shape
            output = equation.outvars[0].aval.shape
            positions = output[1] * output[2] if len(output) == 4 else 1
            found.append((math.prod(kernel), positions))
    return found


def _facts(spec: pb.ModelSpec) -> dict[str, str]:
    facts = model_report.canonical_facts(spec, DEFAULT_INIT)
    return facts | LIBRARY_FACTS if spec.architecture == "library" else facts


def describe(model: Canonical, spec: pb.ModelSpec) -> dict:
    modules = [m for _, m in nnx.iter_modules(model)]
    # Every nnx.Param trains: the optimizer is made over all of them (wrt=nnx.Param).
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return model_report.description(
        _facts(spec),
        conv_biases=[m.bias is not None for m in modules if isinstance(m, nnx.Conv)],
        dense_widths=[
            (m.in_features, m.out_features) for m in modules if isinstance(m, nnx.Linear)
        ],
        # Flax's momentum weighs the old statistic, as Keras' does.
        norms=[(1 - m.momentum, m.epsilon) for m in modules if isinstance(m, nnx.BatchNorm)],
        dropout_rates=[m.rate for m in modules if isinstance(m, nnx.Dropout)],
        bn_running_variance=BN_RUNNING_VARIANCE,
        total_params=params,
        trainable_params=params,
        non_trainable_state=sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat))),
        weight_layers=_weight_layer_positions(model),
    )
