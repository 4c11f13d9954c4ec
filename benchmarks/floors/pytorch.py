"""PyTorch's floor: the whole step — forward, loss, backward, optimizer — of fwbench's own PyTorch
step (services/pytorch/trainer.py TrainStep, channels-last, the capturable fused optimizer)
captured in one CUDA graph and replayed on one GPU-resident batch: no input pipeline, no
recorder, no host work between steps. Timed with CUDA events, one replay (one step) at a time.
On the CPU: the same step, eagerly.
"""

from __future__ import annotations

import sys
import time

import torch

from benchmarks.floors import common
from fwbench.v1 import trainer_pb2 as pb
from services.pytorch import models
from services.pytorch.trainer import (
    CapturedStep,
    TrainStep,
    configure,
    make_optimizer,
    resolve_device,
)


def open_device(name: str) -> tuple[torch.device, str]:
    device = resolve_device(name)
    return device, torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def measure(
    spec: pb.TrainSpec, device: torch.device, replays: int, steps_per_call: int
) -> tuple[list[float], str]:
    """Milliseconds of each of `replays` replays of the captured step (on the CPU: eager
    steps). A replay is one step: steps_per_call is JAX's and TensorFlow's."""
    graphed = device.type == "cuda"
    configure(spec, device)
    memory_format = torch.channels_last if graphed else torch.contiguous_format
    model = models.build(spec.model, spec.seed).to(device, memory_format=memory_format)
    optimizer, _ = make_optimizer(spec, model, total_steps=1, capturable=graphed)
    train_step = TrainStep(spec, model, optimizer, device)
    generator = torch.Generator(device=device).manual_seed(0)
    batch_size, num_classes = spec.batch_size, spec.model.num_classes
    x = torch.randn(batch_size, 3, 32, 32, device=device, generator=generator)
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(0, num_classes, (batch_size,), device=device, generator=generator)
    step = CapturedStep(train_step, batch_size, x, y) if graphed else train_step
    for _ in range(CapturedStep.WARMUP_STEPS + 10):  # warm-up, capture, a few replays
        step(x, y)
    if graphed:
        torch.cuda.synchronize()
    times_ms = []
    for _ in range(replays):
        if graphed:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(x, y)
            end.record()
            end.synchronize()
            times_ms.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            step(x, y)
            times_ms.append((time.perf_counter() - start_s) * 1000)
    method = (
        f"whole step in one CUDA graph, median of {replays} replays (CUDA events)"
        if graphed
        else f"eager step, median of {replays}"
    )
    return times_ms, method


if __name__ == "__main__":
    sys.exit(common.main("pytorch", open_device, measure))
