"""The PyTorch trainer's training step with nothing of fwbench around it: no service, worker,
recorder, sampler or stream. The reference that benchmarks/overhead.py prices the service against.

    .venvs/pytorch/bin/python -m benchmarks.bare_pytorch SPEC_FILE     (see benchmarks/bare.py)

Everything a step does is the trainer's own code (services/pytorch/trainer.py): its Pipeline cuts
batch k of the shared schedule (gather, crop, flip, normalise) on the device, then its TrainStep
(forward, loss, backward, optimizer, the epoch's sums on the device) and the LR-schedule step,
with the same knobs (configure); in the tuned mode on a GPU, that step captured in its CUDA graph
(CapturedStep), in channels-last, with the capturable optimizer. What is left out is what fwbench
adds: the recorder's hooks and progress reports, evaluation, and the events.
"""

from __future__ import annotations

import torch

from benchmarks.bare import StepWindows, print_result, spec_from_argv
from services.common import datasets, schedule
from services.pytorch import models
from services.pytorch.trainer import (
    CapturedStep,
    Pipeline,
    TrainStep,
    configure,
    graphed,
    make_optimizer,
    resolve_device,
    sync,
)


def main() -> None:
    spec = spec_from_argv("pytorch")
    device = resolve_device(spec.device)
    configure(spec, device)
    memory_format = torch.channels_last if graphed(spec, device) else torch.contiguous_format
    dataset = datasets.load(spec)
    pipeline = Pipeline(dataset, device, spec.batch_size, memory_format)
    train_samples = len(dataset.train_labels)
    steps = schedule.steps_per_epoch(train_samples, spec.batch_size)
    model = models.build(spec.model, spec.seed).to(device, memory_format=memory_format)
    optimizer, lr_schedule = make_optimizer(
        spec, model, steps * spec.epochs, capturable=graphed(spec, device)
    )
    forward = torch.compile(model) if spec.compile else model
    train_step = TrainStep(spec, forward, optimizer, device)
    step = train_step

    windows = StepWindows(steps, spec.epochs)
    model.train()
    for epoch in range(spec.epochs):
        pipeline.set_epoch(schedule.epoch_plan(spec.seed, epoch, train_samples, spec.data.augment))
        sync(device)
        windows.begin_epoch()
        for k in range(steps):
            x, y = pipeline.train_batch(k)
            if graphed(spec, device) and step is train_step:
                step = CapturedStep(train_step, spec.batch_size, x, y)
            step(x, y)
            lr_schedule.step()
            if windows.due(epoch, k + 1):
                train_step.window_loss.item()  # synchronises, as the trainer's progress does
                windows.synced(epoch, k + 1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print_result(windows, name)


if __name__ == "__main__":
    main()
