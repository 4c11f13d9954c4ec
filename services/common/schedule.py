"""The batch schedule: which samples, in which order, with which augmentation — framework-free.

From (seed, epoch) both frameworks compute the same permutation of the training set and the same
per-sample augmentation parameters; each then applies them natively (on the GPU where it can), so
batch k of epoch e holds the same images, augmented the same way, in every framework.

Augmentation "crop-flip": zero-pad each 32x32 image by PAD pixels on every side, crop 32x32 at
offset (dy, dx) in [0, 2*PAD], then mirror horizontally when flip is set. In index form, for
output pixel (i, j) of a sample:

    row = dy + i
    col = dx + (31 - j if flip else j)
    out[i, j] = padded[row, col]

`apply_numpy` is that formula in NumPy: the reference both frameworks' pipelines are tested against.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PAD = 4
SIZE = 32
# The tuned mode's training steps per call into a compiled program (Keras' steps_per_execution,
# JAX's scan over that many batches): the host's cost per call, paid once for this many steps.
# Progress is reported once per call.
TUNED_STEPS_PER_EXECUTION = 32


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    order: np.ndarray  # int64 [N]: training-set indices in the order they are used
    dy: np.ndarray  # int64 [N]: crop row offset in the padded image, per position in `order`
    dx: np.ndarray  # int64 [N]: crop column offset
    flip: np.ndarray  # bool [N]: mirror horizontally

    def batch(self, k: int, batch_size: int) -> EpochPlan:
        """Batch k (the last one may be short)."""
        part = slice(k * batch_size, (k + 1) * batch_size)
        return EpochPlan(self.order[part], self.dy[part], self.dx[part], self.flip[part])


def device_rows(k: int, batch_size: int, train_samples: int, devices: int, device: int) -> slice:
    """The positions in the epoch's order that device `device` of `devices` trains on in batch k:
    its contiguous 1/devices share of the batch (the last, short one too), so that the devices
    together train on batch k exactly, in order. One device takes the whole batch."""
    start = k * batch_size
    share = (min(batch_size, train_samples - start)) // devices
    return slice(start + device * share, start + (device + 1) * share)


def uneven_last_batch(train_samples: int, batch_size: int, devices: int) -> bool:
    """Whether an epoch's short last batch cannot be split evenly over `devices` (batch_size
    itself is a multiple of devices, spec.validate): such a spec is refused like a last batch of
    one, since devices with unequal shares would weigh their samples unequally."""
    return train_samples % batch_size % devices != 0


def nearest_multiples(value: int, factor: int) -> str:
    """The multiples of factor on either side of value, for an error message: "28 or 32"."""
    below, above = value // factor * factor, -(-value // factor) * factor
    return " or ".join(str(n) for n in dict.fromkeys((below, above)) if n > 0)


def steps_per_epoch(train_samples: int, batch_size: int) -> int:
    return -(-train_samples // batch_size)


def last_batch_of_one(train_samples: int, batch_size: int) -> bool:
    """Whether an epoch ends with a batch of a single sample, on which BatchNorm (in every model)
    cannot train: PyTorch refuses it, Keras divides by a zero variance. Such a spec is refused
    before any training (datasets.check in the service, the orchestrator before it starts any)."""
    return train_samples % batch_size == 1


def steps_per_execution(mode: str) -> int:
    return TUNED_STEPS_PER_EXECUTION if mode == "tuned" else 1


def executions(train_samples: int, batch_size: int, steps: int) -> list[tuple[int, int]]:
    """An epoch's batches as (first batch, count) for a trainer that runs up to `steps` training
    steps per call of one compiled program: every batch exactly once, in order, and the batches
    of one call of one size (a program is compiled for one shape). Calls of `steps` full batches,
    then the full batches left over in one call, then the short last batch alone."""
    full = train_samples // batch_size
    calls = [(first, min(steps, full - first)) for first in range(0, full, steps)]
    if train_samples % batch_size:
        calls.append((full, 1))
    return calls


def epoch_plan(seed: int, epoch: int, train_samples: int, augment: str) -> EpochPlan:
    rng = np.random.default_rng([seed, 1000 + epoch])
    order = rng.permutation(train_samples).astype(np.int64)
    if augment == "crop-flip":
        dy = rng.integers(0, 2 * PAD + 1, size=train_samples)
        dx = rng.integers(0, 2 * PAD + 1, size=train_samples)
        flip = rng.random(train_samples) < 0.5
    else:  # "none": the centre crop of the padded image is the image itself
        dy = np.full(train_samples, PAD)
        dx = np.full(train_samples, PAD)
        flip = np.zeros(train_samples, dtype=bool)
    return EpochPlan(order, dy.astype(np.int64), dx.astype(np.int64), flip)


def apply_numpy(images: np.ndarray, plan: EpochPlan) -> np.ndarray:
    """The reference: uint8 [B, 32, 32, 3] images of `plan` (a batch) taken from `images`."""
    padded = np.pad(images[plan.order], ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
    rows, cols = crop_indices(plan.dy, plan.dx, plan.flip.astype(np.int64), np.arange(SIZE))
    batch = np.arange(len(plan.order))[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def crop_indices(dy, dx, flip, arange):
    """Row and column indices [B, 32] into padded images: the one formula every pipeline uses.

    Plain arithmetic on integer arrays (flip as 0/1, `arange` = 0..31 on the right device), so the
    same code runs on NumPy arrays, torch tensors and TensorFlow tensors.
    """
    rows = dy[:, None] + arange[None, :]
    cols = dx[:, None] + arange[None, :] + flip[:, None] * (SIZE - 1 - 2 * arange[None, :])
    return rows, cols
