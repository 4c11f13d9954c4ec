"""The fastest this GPU runs each model's training step at the spec's batch size: the floor that
the tuned mode is measured against ("tuned is 1.2x the floor").

    .venvs/pytorch/bin/python -m benchmarks.floor --models resnet50,mobilenet_v2 --batch-size 32

The whole step — forward, loss, backward, optimizer — of fwbench's own PyTorch step
(services/pytorch/trainer.py TrainStep, canonical models, shared initial weights, SGD as the seed
spec) captured in one CUDA graph and replayed on one GPU-resident batch: no input pipeline, no
recorder, no host work between steps. Timed with CUDA events over many replays; prints ms/step
(median and p90) and writes floor.csv for the report.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import torch

from fwbench.v1 import trainer_pb2 as pb
from services.common import spec as specs
from services.pytorch import models
from services.pytorch.trainer import CapturedStep, TrainStep, configure, make_optimizer

REPLAYS = 200


def floor_ms(model_name: str, batch_size: int, precision: str) -> list[float]:
    """Milliseconds of each of REPLAYS replays of the captured step."""
    spec = specs.with_defaults(
        pb.TrainSpec(
            model=pb.ModelSpec(name=model_name),
            batch_size=batch_size,
            precision=precision,
            mode="tuned",
            device="cuda",
        )
    )
    device = torch.device("cuda", 0)
    configure(spec, device)
    model = models.build(spec.model, spec.seed).to(device, memory_format=torch.channels_last)
    optimizer, _ = make_optimizer(spec, model, total_steps=1, capturable=True)
    step = CapturedStep(
        TrainStep(spec, model, optimizer, device),
        batch_size,
        torch.empty(batch_size, 3, 32, 32, device=device),
        torch.empty(batch_size, dtype=torch.long, device=device),
    )
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch_size, 3, 32, 32, device=device, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.model.num_classes, (batch_size,), device=device, generator=generator)
    for _ in range(CapturedStep.WARMUP_STEPS + 10):  # warm-up, capture, a few replays
        step(x, y)
    torch.cuda.synchronize()
    times_ms = []
    for _ in range(REPLAYS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(x, y)
        end.record()
        end.synchronize()
        times_ms.append(start.elapsed_time(end))
    return times_ms


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(specs.MODELS))
    p.add_argument("--batch-size", type=int, default=specs.DEFAULTS["batch_size"])
    p.add_argument("--precision", default="fp32", choices=specs.PRECISIONS)
    p.add_argument("--out", type=Path, default=Path("results/floor"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks.floor needs a CUDA GPU: it times a captured CUDA graph", file=sys.stderr)
        return 2
    rows = []
    for model_name in args.models.split(","):
        times_ms = sorted(floor_ms(model_name, args.batch_size, args.precision))
        row = {
            "model": model_name,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "device_name": torch.cuda.get_device_name(0),
            "step_ms_median": round(statistics.median(times_ms), 3),
            "step_ms_p90": round(statistics.quantiles(times_ms, n=10)[-1], 3),
            "method": f"whole step in one CUDA graph, median of {REPLAYS} replays (CUDA events)",
        }
        rows.append(row)
        print(
            f"{model_name:13} batch {args.batch_size}: {row['step_ms_median']:.2f} ms/step "
            f"(p90 {row['step_ms_p90']:.2f}) on {row['device_name']}",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "floor.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
