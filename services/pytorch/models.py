"""PyTorch models for 32x32x3 inputs: fwbench's canonical definitions, or torchvision's as-is.

canonical: nn.Modules built from services/common/architectures.py, whose module paths are the
canonical tensor names, so the shared initial weights load as a plain state_dict.
library: torchvision.models with its defaults (weights=None), which is what users try first;
torchvision has no MobileNet v1, so `mobilenet` is the canonical one with PyTorch's initialisers.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fwbench.v1 import trainer_pb2 as pb
from services.common import architectures as arch
from services.common import model_report, weights
from services.common.spec import SpecError

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}
TORCHVISION = ("resnet50", "vgg19", "mobilenet_v2")
DEFAULT_INIT = "PyTorch defaults: kaiming uniform (a=sqrt(5)) Conv2d and Linear"
# What describe() cannot read off the modules.
LIBRARY_FACTS = {
    "resnet50": {
        "definition": "torchvision.models.resnet50",
        "resnet_variant": "v1.5 (stride on the 3x3 conv)",
        "initializer": "torchvision: kaiming normal (fan_out) convs, default Linear",
    },
    "vgg19": {
        "definition": "torchvision.models.vgg19 (adaptive average pool to 7x7 before the head)",
        "initializer": "torchvision: kaiming normal (fan_out) convs, N(0, 0.01^2) Linear",
    },
    "mobilenet": {
        "definition": "fwbench canonical (torchvision has no MobileNet v1)",
        "mobilenet_version": "v1, width 1.0, ReLU6",
        "initializer": DEFAULT_INIT,
    },
    "mobilenet_v2": {
        "definition": "torchvision.models.mobilenet_v2",
        "mobilenet_version": "v2, width 1.0",
        "initializer": "torchvision: kaiming normal (fan_out) convs, N(0, 0.01^2) Linear",
    },
}
LIBRARY_PADDING = "symmetric (padding=k//2)"
# BatchNorm2d updates running_var with the unbiased batch variance, Keras with the biased one: a
# difference of the frameworks that identical definitions cannot remove (eval-mode only).
BN_RUNNING_VARIANCE = "updated with the unbiased batch variance"


def _activation(name: str | None) -> nn.Module:
    return ACTIVATIONS[name](inplace=True) if name else nn.Identity()


class ConvBNAct(nn.Sequential):
    def __init__(self, c: arch.Conv):
        layers = OrderedDict(
            conv=nn.Conv2d(
                c.c_in, c.c_out, c.kernel, c.stride, c.padding, groups=c.groups, bias=c.bias
            )
        )
        if c.bn:
            layers["bn"] = nn.BatchNorm2d(c.c_out, eps=arch.BN_EPSILON, momentum=arch.BN_MOMENTUM)
        if c.act:
            layers["act"] = _activation(c.act)
        super().__init__(layers)


class Block(nn.Module):
    """A ResNet bottleneck, a MobileNet separable block or a MobileNetV2 inverted residual."""

    def __init__(self, block: arch.Block):
        super().__init__()
        # Convs are registered by their own names, not inside a child Sequential, so that the
        # module paths are the canonical tensor names (layer1_0.conv1..., layer1_0.downsample...).
        self.branch = [c.name for c in block.convs]
        for c in block.convs:
            self.add_module(c.name, ConvBNAct(c))
        self.shortcut = block.shortcut.name if block.shortcut else None
        if block.shortcut:
            self.add_module(block.shortcut.name, ConvBNAct(block.shortcut))
        self.residual = block.residual
        self.post_act = _activation(block.post_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post_act(arch.block_sum(self, x))


def _module(unit: arch.Unit) -> nn.Module:
    match unit:
        case arch.Conv():
            return ConvBNAct(unit)
        case arch.Block():
            return Block(unit)
        case arch.MaxPool():
            return nn.MaxPool2d(unit.kernel, unit.stride, unit.padding)
        case arch.GlobalAvgPool():
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        case arch.Flatten():
            return nn.Flatten()
        case arch.Dense():
            layers = OrderedDict(linear=nn.Linear(unit.c_in, unit.c_out))
            if unit.act:
                layers["act"] = _activation(unit.act)
            return nn.Sequential(layers)
    raise TypeError(f"no PyTorch module for {unit!r}")


def canonical(architecture: arch.Architecture) -> nn.Sequential:
    return nn.Sequential(OrderedDict((u.name, _module(u)) for u in architecture.units))


def load_canonical(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Sets every tensor of a canonical model to `weights` (canonical names, PyTorch layouts)."""
    missing, unexpected = model.load_state_dict(
        {name: torch.from_numpy(w) for name, w in weights.items()}, strict=False
    )
    # BatchNorm's num_batches_tracked counters are PyTorch's own and start at 0 anyway.
    missing = [name for name in missing if not name.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(
            f"canonical weights do not fit the module: missing {missing}, unexpected {unexpected}"
        )


def canonical_weights(model: nn.Module, spec: pb.ModelSpec) -> dict[str, np.ndarray]:
    """The canonical tensors of a canonical model (what load_canonical sets), on the host."""
    architecture = arch.get(spec.name, spec.num_classes)
    state = model.state_dict()
    tensors = arch.tensors(architecture)
    return {t.name: state[t.name].detach().float().cpu().numpy() for t in tensors}


# The head of each torchvision model: (attribute, index in it or None).
LIBRARY_HEADS = {
    "resnet50": ("fc", None),
    "vgg19": ("classifier", 6),
    "mobilenet_v2": ("classifier", 1),
}


def torchvision_models():
    """torchvision.models, imported by the runs that use it (library models): its import brings
    torch._dynamo in, 1.2-1.5 s of PyTorch's 2.9 s cold import on 2 cores, which a canonical
    run would otherwise pay in its measured start-up for nothing."""
    import torchvision

    return torchvision.models


def library_pretrained(spec: pb.ModelSpec) -> nn.Module:
    """torchvision's model with its default pretrained weights, read from torchvision's own
    cache (TORCH_HOME), its ImageNet head replaced by one of spec.num_classes drawn by PyTorch's
    initialiser (seeded by build)."""
    if spec.name not in TORCHVISION:
        # No machine has them: the spec, not the machine, is at fault.
        raise SpecError(
            f"model.init: pretrained, with architecture library: torchvision has no {spec.name}; "
            "use model.architecture canonical with a weights file"
        )
    url = torchvision_models().get_model_weights(spec.name).DEFAULT.url
    path = weights.cached(
        Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name,
        "torchvision",
        f"fetch it once where the service runs (torchvision.models.{spec.name}(weights="
        "'DEFAULT')) or copy it there; TORCH_HOME moves the cache",
    )
    model = getattr(torchvision_models(), spec.name)(weights=None)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    attribute, index = LIBRARY_HEADS[spec.name]
    old = getattr(model, attribute) if index is None else getattr(model, attribute)[index]
    head = nn.Linear(old.in_features, spec.num_classes)
    if index is None:
        setattr(model, attribute, head)
    else:
        getattr(model, attribute)[index] = head
    return model


def build(spec: pb.ModelSpec, seed: int) -> nn.Module:
    # Seeds PyTorch's own initialisers (init 'framework', library models).
    torch.manual_seed(seed)
    if spec.architecture == "library" and spec.init == "pretrained":
        return library_pretrained(spec)
    if spec.architecture == "library" and spec.name in TORCHVISION:
        return getattr(torchvision_models(), spec.name)(weights=None, num_classes=spec.num_classes)
    architecture = arch.get(spec.name, spec.num_classes)
    model = canonical(architecture)
    if spec.init in ("shared", "pretrained"):
        load_canonical(model, weights.initial(spec, seed))
    return model


def _weight_layer_positions(model: nn.Module) -> list[tuple[int, int]]:
    """(weight elements, output positions per sample) of every conv and dense layer, read from
    one forward pass of a 32x32 input."""
    found = []

    def hook(module, _inputs, output):
        positions = output.shape[2] * output.shape[3] if output.dim() == 4 else 1
        found.append((module.weight.numel(), positions))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    parameter = next(model.parameters())
    try:
        with torch.inference_mode():
            model.eval()(
                torch.zeros(1, arch.IMAGE_CHANNELS, arch.IMAGE_SIZE, arch.IMAGE_SIZE).to(parameter)
            )
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return found


def _facts(spec: pb.ModelSpec) -> dict[str, str]:
    if spec.architecture == "library":
        return {"padding": LIBRARY_PADDING, "output": "logits"} | LIBRARY_FACTS[spec.name]
    return model_report.canonical_facts(spec, DEFAULT_INIT)


def describe(model: nn.Module, spec: pb.ModelSpec) -> dict:
    modules = list(model.modules())
    params = list(model.parameters())
    return model_report.description(
        _facts(spec),
        conv_biases=[m.bias is not None for m in modules if isinstance(m, nn.Conv2d)],
        dense_widths=[(m.in_features, m.out_features) for m in modules if isinstance(m, nn.Linear)],
        norms=[(m.momentum, m.eps) for m in modules if isinstance(m, nn.BatchNorm2d)],
        dropout_rates=[m.p for m in modules if isinstance(m, nn.Dropout)],
        bn_running_variance=BN_RUNNING_VARIANCE,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        non_trainable_state=sum(
            b.numel() for name, b in model.named_buffers() if "num_batches_tracked" not in name
        ),
        weight_layers=_weight_layer_positions(model),
    )
