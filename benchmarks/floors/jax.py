"""JAX's floor: the tuned mode's program (services/jax/trainer.py FunctionalStep: K training steps
of fwbench's Flax NNX model and Optax optimizer inside one compiled lax.scan, the state a flat
list of donated arrays) on one device-resident batch: no input pipeline, no recorder, and one
dispatch from the host per K steps. A step's time is a dispatch's over K, timed from the end of
the dispatch before it with the next one already queued: the host's cost of a dispatch overlaps
the device's work, as it does in a run (which waits only at its progress reports). Waiting for
each dispatch before queueing the next would add that cost to every K steps: on an H100 such a
"floor" read 3.93 ms/step for ResNet50 where the tuned run stepped at 3.62.
"""

from __future__ import annotations

import sys
import time

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

    def dispatch() -> jax.Array:
        """K steps queued, not waited for: their loss, an array that no later call donates."""
        step(batch, steps_per_call, size)
        return step.take_window_loss()

    for _ in range(common.WARMUP_CALLS):  # compilation, autotuning
        jax.block_until_ready(dispatch())
    times_ms = []
    start_s = time.perf_counter()  # the device idle: the first time fills the queue
    queued = dispatch()
    for _ in range(replays):
        following = dispatch()
        jax.block_until_ready(queued)
        now_s = time.perf_counter()
        times_ms.append((now_s - start_s) * 1000 / steps_per_call)
        queued, start_s = following, now_s
    jax.block_until_ready(queued)
    method = (
        f"{steps_per_call} steps per dispatch of one compiled program (lax.scan, flat donated "
        f"state) on one resident batch, median of {replays} dispatches / {steps_per_call}, "
        "each from the end of the one before it, the next already queued"
    )
    return times_ms, method


if __name__ == "__main__":
    sys.exit(common.main("jax", open_device, measure))
