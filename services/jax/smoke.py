"""One training step of a small Flax NNX network, as a user's first script would take it.

fwbench friction's shared-environment probe runs it after importing every framework in one
interpreter, to see whether the frameworks can train side by side (services/<framework>/smoke.py).
Flax ships no model zoo, so the network is the few lines a first script writes itself.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from flax import nnx


class SmallNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 16, (3, 3), rngs=rngs)
        self.head = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.conv(x)).mean(axis=(1, 2)))


def train_one_step() -> None:
    model = SmallNet(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.01), wrt=nnx.Param)

    def loss_fn(model):
        logits = model(jnp.zeros((8, 32, 32, 3)))
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros(8, int)).mean()

    optimizer.update(model, nnx.grad(loss_fn)(model))
