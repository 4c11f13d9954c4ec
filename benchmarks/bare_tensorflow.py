"""The TensorFlow trainer's training step with nothing of fwbench around it: no service, worker,
recorder callback, sampler or stream. The reference that benchmarks/overhead.py prices the service
against.

    .venvs/tensorflow/bin/python -m benchmarks.bare_tensorflow SPEC_FILE   (see benchmarks/bare.py)

The model, `model.compile` and the tf.data pipeline (gather, crop, flip, normalise of the shared
schedule, prefetched) are the trainer's own (services/tensorflow/trainer.py), in either mode (the
tuned one compiles with XLA and runs steps_per_execution steps per call). The loop is a plain
Python loop over `model.train_function` — the compiled function that `model.fit` itself calls once
per execution, on the epoch's own iterator — rather than `model.fit`: fit with a batch callback
converts every execution's logs to floats, which waits for the device after every execution (the
friction the service's RecorderCallback pays), and fit without one cannot be timed in windows. So
the ratio prices fwbench's callback and that wait along with the rest of what fwbench adds
(recorder, sampler, stream, worker), and also fit's own per-execution loop (callback dispatch, its
epoch iterator), which any fit user pays. Like the PyTorch bare loop, this one computes no
training metrics and does not evaluate.
"""

from __future__ import annotations

from benchmarks.bare import StepWindows, print_result, spec_from_argv
from services.common import datasets, schedule
from services.tensorflow import models
from services.tensorflow.trainer import (
    Pipeline,
    compile_for_training,
    configure,
    gpu_name,
    resolve_device,
)


def main() -> None:
    spec = spec_from_argv("tensorflow")
    gpu = resolve_device(spec.device)
    configure(spec, gpu)
    dataset = datasets.load(spec)
    pipeline = Pipeline(dataset, spec.batch_size, spec.model.num_classes)
    train_samples = len(dataset.train_labels)
    steps = schedule.steps_per_epoch(train_samples, spec.batch_size)
    model = models.build(spec.model, spec.seed)
    compile_for_training(model, spec, steps * spec.epochs, with_metrics=False)
    model.make_train_function()
    epoch_batches = pipeline.train_dataset()

    windows = StepWindows(steps, spec.epochs)
    for epoch in range(spec.epochs):
        pipeline.set_epoch(schedule.epoch_plan(spec.seed, epoch, train_samples, spec.data.augment))
        batches = iter(epoch_batches)
        windows.begin_epoch()
        step = 0
        while step < steps:
            logs = model.train_function(batches)
            # One execution: steps_per_execution steps, or what is left of the epoch.
            step = min(step + schedule.steps_per_execution(spec.mode), steps)
            if windows.due(epoch, step):
                float(logs["loss"])  # waits for the step, as the callback's logs conversion does
                windows.synced(epoch, step)
    print_result(windows, gpu_name(gpu) if gpu else "cpu")


if __name__ == "__main__":
    main()
