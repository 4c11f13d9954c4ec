"""The PyTorch trainer's training step with nothing of fwbench around it: no service, worker,
recorder, sampler or stream. The reference that benchmarks/overhead.py prices the service against.

    .venvs/pytorch/bin/python -m benchmarks.bare_pytorch SPEC_FILE     (see benchmarks/bare.py)

Everything a step does is the trainer's own code (services/pytorch/trainer.py): its Pipeline cuts
batch k of the shared schedule (gather, crop, flip, normalise) on the device, then the same
forward, loss, backward, optimizer and LR-schedule step, with the same knobs (configure). What is
left out is what fwbench adds: the recorder's hooks, the running sums for the epoch's train
loss and accuracy, evaluation, and the events.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.bare import StepWindows, print_result, spec_from_argv
from services.common import data as datasets
from services.common import schedule
from services.pytorch import models
from services.pytorch.trainer import (
    Pipeline,
    autocast,
    configure,
    make_optimizer,
    resolve_device,
    sync,
)


def main() -> None:
    spec = spec_from_argv("pytorch")
    device = resolve_device(spec.device)
    configure(spec, device)
    dataset = datasets.load(spec)
    pipeline = Pipeline(dataset, device, spec.batch_size)
    train_samples = len(dataset.train_labels)
    steps = schedule.steps_per_epoch(train_samples, spec.batch_size)
    model = models.build(spec.model, spec.seed).to(device)
    optimizer, lr_schedule = make_optimizer(spec, model, steps * spec.epochs)
    forward = torch.compile(model) if spec.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=spec.precision == "fp16")

    windows = StepWindows(steps)
    model.train()
    for epoch in range(spec.epochs):
        pipeline.set_epoch(schedule.epoch_plan(spec.seed, epoch, train_samples, spec.data.augment))
        sync(device)
        windows.begin_epoch()
        for k in range(steps):
            x, y = pipeline.train_batch(k)
            with autocast(spec, device):
                loss = F.cross_entropy(
                    forward(x).float(), y, label_smoothing=spec.optimizer.label_smoothing
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            lr_schedule.step()
            if windows.due(epoch, k + 1):
                loss.item()  # synchronises, as the trainer's progress report does
                windows.synced(epoch, k + 1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print_result(windows, name)


if __name__ == "__main__":
    main()
