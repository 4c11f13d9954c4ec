"""A bare PyTorch training loop — no service, no recorder, no progress — as the reference that
benchmarks/harness_overhead.py compares the service against. Runs in .venvs/pytorch and prints
one JSON line."""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from fwbench.v1 import trainer_pb2 as pb
from services.pytorch import models

WINDOW_STEPS = 50


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet50")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=500)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fwbench's fp32 default: strict
    torch.backends.cudnn.allow_tf32 = False
    spec = pb.ModelSpec(name=args.model, architecture="canonical", init="shared", num_classes=10)
    model = models.build(spec, seed=0).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(10):  # warm-up: cuDNN plans, allocator
        step()
    window_s = []
    for _ in range(args.steps // WINDOW_STEPS):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(WINDOW_STEPS):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        window_s.append((time.perf_counter() - start) / WINDOW_STEPS)
    median_s = statistics.median(window_s)
    print(json.dumps({"step_time_median_s": median_s, "images_per_s": args.batch_size / median_s}))


if __name__ == "__main__":
    main()
