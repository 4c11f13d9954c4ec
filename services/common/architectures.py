"""The canonical CIFAR-10 models as data: one description that every framework builds natively.

A model is a sequence of units (convolutions, blocks, pools, dense layers). From the same
description come the initial weights (services/common/init.py), the expected parameter counts and
forward FLOPs, and each framework's own layers (services/<framework>/models.py), so the models
are identical layer for layer by construction, and the tests check that they are.

Conventions every framework follows:
- Tensors are named by their path, e.g. `layer1_0.conv2.conv.weight`, `fc.linear.bias`, in
  PyTorch layouts (conv weights O x I/groups x H x W, dense weights out x in); a framework with
  other layouts transposes when it loads them.
- Padding is symmetric, `kernel // 2` on every side, as PyTorch's `padding=k//2`. TensorFlow's
  'same' puts the odd pixel of a stride-2 convolution on the bottom/right only, so a framework
  with that convention pads explicitly and convolves 'valid' where the stride is above 1.
- BatchNorm momentum is the weight of the new batch statistic (PyTorch's convention; Keras'
  `momentum` is 1 minus it), epsilon as in PyTorch.
- No dropout anywhere: each framework draws dropout masks from its own random generator, so with
  dropout two frameworks would no longer train the same function from the same weights, and
  5-epoch runs do not overfit enough to need it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

IMAGE_SIZE = 32
IMAGE_CHANNELS = 3
BN_MOMENTUM = 0.1  # weight of the new batch statistic: PyTorch momentum 0.1 == Keras momentum 0.9
BN_EPSILON = 1e-5


def weight_layer_flops(weight_elements: int, output_positions: int) -> int:
    """FLOPs of a convolution or dense layer, as services/common/model_report.py counts them:
    every weight takes part in one multiply-add (2 FLOPs) per output position."""
    return 2 * weight_elements * output_positions


PADDING = "symmetric zero padding (explicit before stride-2 convolutions)"


@dataclasses.dataclass(frozen=True)
class Conv:
    """A 2-D convolution, optionally followed by BatchNorm and an activation."""

    name: str
    c_in: int
    c_out: int
    kernel: int
    stride: int = 1
    groups: int = 1  # c_in for a depthwise convolution
    bias: bool = False
    bn: bool = True
    act: str | None = "relu"  # relu | relu6 | None

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def depthwise(self) -> bool:
        return self.groups > 1

    def __post_init__(self):
        # Only plain and depthwise convolutions exist in these models, and framework layouts
        # differ for anything in between.
        if self.groups not in (1, self.c_in) or (self.depthwise and self.c_out != self.c_in):
            raise ValueError(f"{self.name}: only plain or depthwise convolutions are supported")


@dataclasses.dataclass(frozen=True)
class Block:
    """Convolutions in sequence; with `residual`, their output is added to the shortcut (the input
    itself, or `shortcut` where the shape changes), then `post_act` is applied."""

    name: str
    convs: tuple[Conv, ...]
    residual: bool = False
    shortcut: Conv | None = None
    post_act: str | None = None


def block_sum(block, x):
    """What a Block computes before its post_act, for a framework whose modules run as Python
    on its own arrays (PyTorch, Flax NNX): `block` holds its convs as attributes named by
    `block.branch` (and `block.shortcut`, or None), and the Block's `residual`."""
    out = x
    for name in block.branch:
        out = getattr(block, name)(out)
    if block.residual:
        out = out + (getattr(block, block.shortcut)(x) if block.shortcut else x)
    return out


@dataclasses.dataclass(frozen=True)
class MaxPool:
    """Max pooling. Padding, where there is any, follows a ReLU: zero padding then equals the
    -inf padding of PyTorch's MaxPool2d."""

    name: str
    kernel: int
    stride: int
    padding: int = 0


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool:
    """Mean over height and width, to a feature vector."""

    name: str


@dataclasses.dataclass(frozen=True)
class Flatten:
    """To a feature vector; used where the map is 1 x 1, so NCHW and NHWC flatten alike."""

    name: str


@dataclasses.dataclass(frozen=True)
class Dense:
    name: str
    c_in: int
    c_out: int
    act: str | None = None


Unit = Conv | Block | MaxPool | GlobalAvgPool | Flatten | Dense


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    units: tuple[Unit, ...]
    # What distinguishes this definition from same-named ones (e.g. the ResNet variant).
    facts: dict[str, str]


BN_STATISTICS = ("bn_mean", "bn_var")  # state, not parameters


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor of a model, in canonical order."""

    layer: str  # path of its layer, e.g. layer1_0.conv2
    module: str  # conv | bn | linear
    param: str  # weight | bias | running_mean | running_var (PyTorch's names)
    shape: tuple[int, ...]  # PyTorch's layout
    # How it is initialised: conv | depthwise_conv | dense | classifier | bias | bn_gamma |
    # bn_gamma_residual (the last BatchNorm of a residual branch) | bn_beta | bn_mean | bn_var.
    role: str

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.module}.{self.param}"


def resnet50(num_classes: int) -> Architecture:
    """ResNet-50 v1.5: the stride of a downsampling bottleneck is on its 3x3 convolution."""
    units: list[Unit] = [
        Conv("stem", IMAGE_CHANNELS, 64, 7, stride=2),
        MaxPool("pool", 3, 2, padding=1),
    ]
    c_in = 64
    for stage, (width, depth, stride) in enumerate(
        [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1
    ):
        for i in range(depth):
            s = stride if i == 0 else 1
            c_out = 4 * width
            units.append(
                Block(
                    f"layer{stage}_{i}",
                    (
                        Conv("conv1", c_in, width, 1),
                        Conv("conv2", width, width, 3, stride=s),
                        Conv("conv3", width, c_out, 1, act=None),
                    ),
                    residual=True,
                    shortcut=Conv("downsample", c_in, c_out, 1, stride=s, act=None)
                    if i == 0
                    else None,
                    post_act="relu",
                )
            )
            c_in = c_out
    units += [GlobalAvgPool("avgpool"), Dense("fc", c_in, num_classes)]
    return Architecture(
        "resnet50",
        tuple(units),
        {"resnet_variant": "v1.5 (stride on the 3x3 conv)"},
    )


VGG19_CONVS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M") + (512, 512, 512, 512, "M") * 2


def vgg19(num_classes: int) -> Architecture:
    """VGG19's 16 convolutions (with biases, no BatchNorm) and 5 max-pools, then at 1x1x512 the
    classifier 512 -> 4096 -> 4096 -> classes (Keras' VGG19 head, not torchvision's 7x7 one)."""
    units: list[Unit] = []
    c_in, block, conv = IMAGE_CHANNELS, 1, 1
    for item in VGG19_CONVS:
        if item == "M":
            units.append(MaxPool(f"block{block}_pool", 2, 2))
            block, conv = block + 1, 1
        else:
            units.append(Conv(f"block{block}_conv{conv}", c_in, item, 3, bias=True, bn=False))
            c_in, conv = item, conv + 1
    units += [
        Flatten("flatten"),
        Dense("fc1", c_in, 4096, act="relu"),
        Dense("fc2", 4096, 4096, act="relu"),
        Dense("fc3", 4096, num_classes),
    ]
    return Architecture("vgg19", tuple(units), {})


# (output channels, stride) of MobileNet v1's 13 depthwise-separable blocks.
MOBILENET_BLOCKS = (
    ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))
    + ((512, 1),) * 5
    + ((1024, 2), (1024, 1))
)


def mobilenet(num_classes: int) -> Architecture:
    """MobileNet v1, width 1.0, with ReLU6 as in Keras' MobileNet."""
    units: list[Unit] = [Conv("stem", IMAGE_CHANNELS, 32, 3, stride=2, act="relu6")]
    c_in = 32
    for i, (c_out, stride) in enumerate(MOBILENET_BLOCKS, start=1):
        units.append(
            Block(
                f"block{i}",
                (
                    Conv("depthwise", c_in, c_in, 3, stride=stride, groups=c_in, act="relu6"),
                    Conv("pointwise", c_in, c_out, 1, act="relu6"),
                ),
            )
        )
        c_in = c_out
    units += [GlobalAvgPool("avgpool"), Dense("fc", c_in, num_classes)]
    return Architecture("mobilenet", tuple(units), {"mobilenet_version": "v1, width 1.0, ReLU6"})


# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2's bottlenecks.
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet_v2(num_classes: int) -> Architecture:
    """MobileNetV2, width 1.0: inverted residuals with linear bottlenecks, ReLU6."""
    units: list[Unit] = [Conv("stem", IMAGE_CHANNELS, 32, 3, stride=2, act="relu6")]
    c_in, index = 32, 1
    for t, c_out, n, first_stride in MOBILENET_V2_STAGES:
        for i in range(n):
            stride = first_stride if i == 0 else 1
            hidden = c_in * t
            expand = (Conv("expand", c_in, hidden, 1, act="relu6"),) if t != 1 else ()
            units.append(
                Block(
                    f"block{index}",
                    (
                        *expand,
                        Conv("depthwise", hidden, hidden, 3, stride, groups=hidden, act="relu6"),
                        Conv("project", hidden, c_out, 1, act=None),
                    ),
                    residual=stride == 1 and c_in == c_out,
                )
            )
            c_in, index = c_out, index + 1
    units += [
        Conv("last", c_in, 1280, 1, act="relu6"),
        GlobalAvgPool("avgpool"),
        Dense("fc", 1280, num_classes),
    ]
    return Architecture("mobilenet_v2", tuple(units), {"mobilenet_version": "v2, width 1.0"})


ARCHITECTURES = {f.__name__: f for f in (resnet50, vgg19, mobilenet, mobilenet_v2)}


def get(name: str, num_classes: int) -> Architecture:
    return ARCHITECTURES[name](num_classes)


def weight_layers(arch: Architecture) -> Iterator[tuple[str, Conv | Dense]]:
    """(path, layer) of every Conv and Dense in forward order; a block's shortcut comes after
    its branch."""
    for unit in arch.units:
        if isinstance(unit, Conv | Dense):
            yield unit.name, unit
        elif isinstance(unit, Block):
            for conv in unit.convs:
                yield f"{unit.name}.{conv.name}", conv
            if unit.shortcut is not None:
                yield f"{unit.name}.{unit.shortcut.name}", unit.shortcut


def tensors(arch: Architecture) -> list[Tensor]:
    """Every parameter and BatchNorm statistic of arch, in canonical order: layer by layer as in
    weight_layers; within a layer weight then bias (the order Keras' get_weights uses too), and
    for BatchNorm weight (gamma), bias (beta), running mean, running variance."""
    out = []
    layers = list(weight_layers(arch))
    classifier = layers[-1][0]
    # The BatchNorm that ends a residual branch scales what the block adds to its input.
    residual_ends = {
        f"{unit.name}.{unit.convs[-1].name}"
        for unit in arch.units
        if isinstance(unit, Block) and unit.residual
    }
    for path, layer in layers:
        if isinstance(layer, Dense):
            role = "classifier" if path == classifier else "dense"
            out.append(Tensor(path, "linear", "weight", (layer.c_out, layer.c_in), role))
            out.append(Tensor(path, "linear", "bias", (layer.c_out,), "bias"))
            continue
        shape = (layer.c_out, layer.c_in // layer.groups, layer.kernel, layer.kernel)
        role = "depthwise_conv" if layer.depthwise else "conv"
        out.append(Tensor(path, "conv", "weight", shape, role))
        if layer.bias:
            out.append(Tensor(path, "conv", "bias", (layer.c_out,), "bias"))
        if layer.bn:
            gamma = "bn_gamma_residual" if path in residual_ends else "bn_gamma"
            for param, role in (
                ("weight", gamma),
                ("bias", "bn_beta"),
                ("running_mean", "bn_mean"),
                ("running_var", "bn_var"),
            ):
                out.append(Tensor(path, "bn", param, (layer.c_out,), role))
    return out


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def forward_flops(arch: Architecture) -> int:
    """FLOPs of one 32x32 sample's forward pass, by services/common/model_report.py's convention."""
    total, size = 0, IMAGE_SIZE

    def conv(c: Conv, size_in: int) -> tuple[int, int]:
        size_out = _conv_out(size_in, c.kernel, c.stride, c.padding)
        weights = c.c_out * (c.c_in // c.groups) * c.kernel**2
        return weight_layer_flops(weights, size_out**2), size_out

    for unit in arch.units:
        if isinstance(unit, Conv):
            flops, size = conv(unit, size)
        elif isinstance(unit, Block):
            flops, size_in = 0, size
            for c in unit.convs:
                f, size = conv(c, size)
                flops += f
            if unit.shortcut is not None:
                flops += conv(unit.shortcut, size_in)[0]
        elif isinstance(unit, MaxPool):
            flops, size = 0, _conv_out(size, unit.kernel, unit.stride, unit.padding)
        elif isinstance(unit, GlobalAvgPool | Flatten):
            flops, size = 0, 1
        else:
            flops = weight_layer_flops(unit.c_in * unit.c_out, 1)
        total += flops
    return total


def counts(arch: Architecture) -> dict[str, int]:
    """The ModelReport counts the canonical definition implies."""
    shapes = tensors(arch)
    size = {t.name: math.prod(t.shape) for t in shapes}
    state = sum(size[t.name] for t in shapes if t.role in BN_STATISTICS)
    params = sum(size.values()) - state
    layers = list(weight_layers(arch))
    return {
        "total_params": params,
        "trainable_params": params,
        "non_trainable_state": state,
        "layer_count": len(layers)
        + sum(1 for _, layer in layers if isinstance(layer, Conv) and layer.bn),
        "forward_flops_per_sample": forward_flops(arch),
    }
