"""One training step of torchvision's MobileNetV2, as a user's first script would take it.

fwbench friction's shared-environment probe runs it after importing every framework in one
interpreter, to see whether the frameworks can train side by side (services/<framework>/smoke.py).
"""

from __future__ import annotations

import torch
import torchvision


def train_one_step() -> None:
    model = torchvision.models.mobilenet_v2(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
