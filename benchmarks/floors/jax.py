"""JAX's floor: the tuned mode's program (services/jax/trainer.py FunctionalStep: K training steps
of fwbench's Flax NNX model and Optax optimizer inside one compiled lax.scan, the state a flat
list of donated arrays) on one device-resident batch: no input pipeline, no recorder, and one
dispatch from the host per K steps. A step's time is a dispatch's, to block_until_ready, over K.
"""

from __future__ import annotations

import sys

import jax

from benchmarks.floors import common
from fwbench.v1 import trainer_pb2 as pb
from services.common import schedule
from services.jax import trainer


def open_device(name: str) -> tuple[jax.Device, str]:
    device = trainer.resolve_device(name)
    return device, "cpu" if device.platform == "cpu" else device.device_kind


def resident(i, batch: tuple, size: int) -> tuple:
    """Every step of a dispatch trains on the batch it was given."""
    return batch


def measure(
    spec: pb.TrainSpec, device: jax.Device, replays: int, steps_per_call: int
) -> tuple[list[float], str]:
    """Milliseconds per step of each of `replays` dispatches of steps_per_call steps."""
    trainer.configure(spec, device)
    model, optimizer, scale = trainer.training_objects(spec, spec.model, total_steps=1)
    smoothing = spec.optimizer.label_smoothing
    step = trainer.FunctionalStep(model, optimizer, scale, smoothing, resident)
    images_key, labels_key = jax.random.split(jax.random.key(0))
    size = spec.batch_size
    batch = (
        jax.random.normal(images_key, (size, schedule.SIZE, schedule.SIZE, 3)),
        jax.random.randint(labels_key, (size,), 0, spec.model.num_classes),
    )

    def dispatch() -> None:
        step(batch, steps_per_call, size)
        jax.block_until_ready((step.leaves, step.sums))

    times_ms = common.per_step_ms(dispatch, replays, steps_per_call)
    method = (
        f"{steps_per_call} steps per dispatch of one compiled program (lax.scan, flat donated "
        f"state) on one resident batch, median of {replays} dispatches / {steps_per_call} "
        "(block_until_ready)"
    )
    return times_ms, method


if __name__ == "__main__":
    sys.exit(common.main("jax", open_device, measure))
