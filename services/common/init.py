"""Shared initial weights: every tensor of a canonical model derived from the seed, in NumPy.

Every framework loads the same float32 arrays (names and PyTorch layouts of
services/common/architectures.py; a framework with other layouts transposes them), so two
frameworks start training from identical weights and differences of their default initialisers
(kaiming-uniform vs glorot-uniform) drop out of the comparison.

The initialiser:
- convolutions and hidden dense layers: He normal, std = sqrt(2 / fan_in) with fan_in =
  (input channels per group) x kernel height x kernel width, which keeps the variance of ReLU
  networks constant with depth and is right for depthwise convolutions too (fan_in = 9);
- the classifier: normal with std 0.01, so that the initial logits are near 0 and the initial
  loss is near ln(classes);
- biases 0; BatchNorm gamma 1, beta 0, running mean 0, running variance 1;
- except gamma RESIDUAL_GAMMA = 0.2 for the last BatchNorm of every residual branch (ResNet's
  conv3, MobileNetV2's projection), so that each block starts near the identity. This is the
  zero-init-residual of Goyal et al. 2017 (torchvision's `zero_init_residual`, timm's
  `zero_init_last`), softened: with gamma 0 the branches would not shape the outputs at all and
  the parity checks would not see their layers; with gamma 1 each of ResNet-50's 16 blocks about
  doubles the activations' variance, and in eval mode at init (BatchNorm's running statistics
  still 0 and 1) its logits reach ~260, where fp32 rounding alone differs between frameworks by
  more than the 1e-4 parity tolerance. With 0.2 its eval-mode logits at init stay below ~2.

Tensor i of the canonical order draws from its own stream, seeded by (seed, INIT_STREAM, i), so
each tensor is independent of how many numbers the others drew.
"""

from __future__ import annotations

import math

import numpy as np

from services.common import architectures

INIT_STREAM = 0x1417  # separates these streams from the data's (seed, split) streams
CLASSIFIER_STD = 0.01
RESIDUAL_GAMMA = 0.2
DESCRIPTION = (
    "fwbench shared: He normal (fan_in) convs and hidden dense, N(0, 0.01^2) classifier, "
    f"zero biases, BN gamma 1 (last BN of a residual branch {RESIDUAL_GAMMA}) beta 0"
)
_CONSTANT = {
    "bias": 0.0,
    "bn_gamma": 1.0,
    "bn_gamma_residual": RESIDUAL_GAMMA,
    "bn_beta": 0.0,
    "bn_mean": 0.0,
    "bn_var": 1.0,
}


def initial_weights(arch: architectures.Architecture, seed: int) -> dict[str, np.ndarray]:
    """{tensor name: float32 array in PyTorch layout} of every tensor of arch, canonical order."""
    weights = {}
    for index, tensor in enumerate(architectures.tensors(arch)):
        if tensor.role in _CONSTANT:
            weights[tensor.name] = np.full(tensor.shape, _CONSTANT[tensor.role], np.float32)
            continue
        if tensor.role == "classifier":
            std = CLASSIFIER_STD
        else:
            fan_in = math.prod(tensor.shape[1:])
            std = math.sqrt(2.0 / fan_in)
        rng = np.random.default_rng([seed, INIT_STREAM, index])
        weights[tensor.name] = rng.standard_normal(tensor.shape, np.float32) * np.float32(std)
    return weights
