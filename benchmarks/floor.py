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
import time
from pathlib import Path

import torch

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.results import schema
from services.common import spec as specs
from services.pytorch import models
from services.pytorch.trainer import CapturedStep, TrainStep, configure, make_optimizer

REPLAYS = 200
# CIFAR-10's: the floor is for the seed's job (a spec's own head comes from its dataset).
NUM_CLASSES = 10


def floor_ms(
    model_name: str,
    batch_size: int,
    precision: str,
    num_classes: int,
    device_name: str,
    replays: int,
) -> list[float]:
    """Milliseconds of each of `replays` replays of the captured step (on the CPU: eager steps,
    a check of the code, not a floor)."""
    spec = specs.with_defaults(
        pb.TrainSpec(
            model=pb.ModelSpec(name=model_name, num_classes=num_classes),
            batch_size=batch_size,
            precision=precision,
            mode="tuned",
            device=device_name,
        )
    )
    device = torch.device("cuda", 0) if device_name == "cuda" else torch.device("cpu")
    graphed = device.type == "cuda"
    configure(spec, device)
    memory_format = torch.channels_last if graphed else torch.contiguous_format
    model = models.build(spec.model, spec.seed).to(device, memory_format=memory_format)
    optimizer, _ = make_optimizer(spec, model, total_steps=1, capturable=graphed)
    train_step = TrainStep(spec, model, optimizer, device)
    generator = torch.Generator(device=device).manual_seed(0)
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
    return times_ms


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(specs.MODELS))
    p.add_argument("--batch-size", type=int, default=specs.DEFAULTS["batch_size"])
    p.add_argument("--precision", default="fp32", choices=specs.PRECISIONS)
    p.add_argument("--num-classes", type=int, default=NUM_CLASSES, help="the head's outputs")
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: the same step eagerly, labelled so: a check of the code, not a floor",
    )
    p.add_argument("--replays", type=int, default=REPLAYS)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/floor"),
        help="where floor.csv goes; a results directory gets a section in its report",
    )
    args = p.parse_args()
    models_asked = args.models.split(",")
    for name in models_asked:
        if name not in specs.MODELS:
            p.error(f"model {name} not known; choose from {', '.join(specs.MODELS)}")
    for option in ("batch_size", "num_classes", "replays"):
        if getattr(args, option) < 1:
            p.error(f"--{option.replace('_', '-')} must be at least 1, not {getattr(args, option)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "benchmarks.floor needs a CUDA GPU: it times a captured CUDA graph "
            "(--device cpu checks the code eagerly)",
            file=sys.stderr,
        )
        return 2
    graphed = args.device == "cuda"
    device_name = torch.cuda.get_device_name(0) if graphed else "cpu"
    method = (
        f"whole step in one CUDA graph, median of {args.replays} replays (CUDA events)"
        if graphed
        else f"eager step on the CPU, median of {args.replays} (a check of the code, not a floor)"
    )
    rows = []
    for model_name in models_asked:
        times_ms = floor_ms(
            model_name,
            args.batch_size,
            args.precision,
            args.num_classes,
            args.device,
            args.replays,
        )
        row = {
            "model": model_name,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "device_name": device_name,
            "step_ms_median": round(statistics.median(times_ms), 3),
            "step_ms_p90": round(statistics.quantiles(times_ms, n=10, method="inclusive")[-1], 3)
            if len(times_ms) > 1
            else round(times_ms[0], 3),
            "method": method,
        }
        rows.append(row)
        print(
            f"{model_name:13} batch {args.batch_size}: {row['step_ms_median']:.2f} ms/step "
            f"(p90 {row['step_ms_p90']:.2f}) on {row['device_name']}",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / schema.FLOOR_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=schema.FLOOR_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
