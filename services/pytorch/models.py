"""PyTorch models for 32x32x3 inputs and 10 classes.

Provisional: library models (torchvision) and a MobileNet v1; the canonical definitions shared
with TensorFlow replace this (issue: model parity).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from fwbench.v1 import trainer_pb2 as pb


def _dw_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def mobilenet_v1(num_classes: int) -> nn.Module:
    widths = (
        [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
        + [(512, 512, 1)] * 5
        + [(512, 1024, 2), (1024, 1024, 1)]
    )
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        *[_dw_block(*w) for w in widths],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(1024, num_classes),
    )


def build(spec: pb.ModelSpec, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if spec.name == "mobilenet":
        return mobilenet_v1(spec.num_classes)
    return getattr(torchvision.models, spec.name)(weights=None, num_classes=spec.num_classes)


def describe(model: nn.Module, spec: pb.ModelSpec) -> dict:
    params = list(model.parameters())
    return {
        "total_params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "non_trainable_state": sum(
            b.numel() for name, b in model.named_buffers() if "num_batches" not in name
        ),
        "layer_count": sum(
            1 for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d)
        ),
    }
