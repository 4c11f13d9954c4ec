"""TensorFlow's floor: the tuned mode's compiled step (services/tensorflow/trainer.py
compile_for_training: fwbench's Keras model and optimizer, XLA with jit_compile=True) run by
Keras' own train function with K steps per execution, over one batch that tf.data repeats from
memory: no augmentation or gather, no callbacks, one call from the host per K steps. A step's
time is an execution's, to its loss read back, over K.
"""

from __future__ import annotations

import sys

import tensorflow as tf

from benchmarks.floors import common
from fwbench.v1 import trainer_pb2 as pb
from services.common import schedule
from services.tensorflow import models, trainer


def open_device(name: str) -> tuple[tf.config.PhysicalDevice | None, str]:
    gpu = trainer.resolve_device(name)
    return gpu, trainer.gpu_name(gpu) if gpu else "cpu"


def measure(
    spec: pb.TrainSpec, gpu: tf.config.PhysicalDevice | None, replays: int, steps_per_call: int
) -> tuple[list[float], str]:
    """Milliseconds per step of each of `replays` executions of steps_per_call steps."""
    trainer.configure(spec, gpu)
    model = models.build(spec.model, spec.seed)
    trainer.compile_for_training(
        model, spec, total_steps=1, with_metrics=False, steps_per_execution=steps_per_call
    )
    model.make_train_function()
    size, num_classes = spec.batch_size, spec.model.num_classes
    images = tf.random.stateless_normal((size, schedule.SIZE, schedule.SIZE, 3), seed=(0, 0))
    labels = tf.random.stateless_uniform((size,), (0, 1), maxval=num_classes, dtype=tf.int32)
    batches = iter(
        tf.data.Dataset.from_tensors((images, tf.one_hot(labels, num_classes))).cache().repeat()
    )

    def execution() -> None:
        float(model.train_function(batches)["loss"])  # waits for the execution's last step

    times_ms = common.per_step_ms(execution, replays, steps_per_call)
    method = (
        f"Keras train function, XLA (jit_compile), {steps_per_call} steps per execution over one "
        f"batch repeated by tf.data, median of {replays} executions / {steps_per_call}"
    )
    return times_ms, method


if __name__ == "__main__":
    sys.exit(common.main("tensorflow", open_device, measure))
