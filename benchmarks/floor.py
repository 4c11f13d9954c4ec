"""The hardware floor: the fastest this GPU runs each model's whole training step at the spec's
batch size, so that a run can be stated as "1.2x the floor".

    .venvs/pytorch/bin/python -m benchmarks.floor --models resnet50,vgg19,mobilenet,mobilenet_v2 \
        --batch-size 32 --out results/floor

The step — forward, cross-entropy, backward, SGD update — is captured whole in one CUDA graph
(torch.cuda.graphs: static input buffers, warm-up on a side stream, then capture) and replayed, so
no Python and no kernel launch sits between kernels. The models are fwbench's canonical ones
(services/pytorch/models.py) with the shared initial weights, and the optimiser and precision
knobs come from the spec's defaults through the trainer's own make_optimizer and configure. Each
replay first copies the next of a few GPU-resident synthetic batches into the static buffers, as a
captured trainer must. A replay is timed between CUDA events recorded on either side of it; the
median and p90 over many replays are printed and written to OUT/floor.csv and OUT/floor.json.

Without a GPU it exits 2. `--device cpu` runs the same step function eagerly (no CUDA graph on a
CPU), labelled so in the method column: a check of the code, not a floor.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from fwbench.v1 import trainer_pb2 as pb
from services.common.spec import MODELS, with_defaults
from services.pytorch import models
from services.pytorch.trainer import configure, make_optimizer

# Batches cycled through the static input buffers: enough that no replay reuses the last one.
POOL_BATCHES = 4
CUDA_GRAPH = (
    "cuda graph: whole step (forward, backward, SGD) captured once, replayed; cudnn autotuned"
)
# fp16 is left out: it needs loss scaling, whose skipped steps a captured graph cannot take.
AUTOCAST = {"fp32": None, "tf32": None, "bf16": torch.bfloat16}
EAGER_CPU = "eager (no CUDA graph on CPU)"


@dataclasses.dataclass
class Floor:
    model: str
    batch_size: int
    device_name: str
    precision: str
    channels_last: bool
    step_ms_median: float
    step_ms_p90: float
    steps_timed: int
    method: str


def make_step(
    spec: pb.TrainSpec, device: torch.device, channels_last: bool
) -> tuple[Callable[[], None], torch.Tensor, torch.Tensor]:
    """(step, x, y): one training step of the spec's model that reads its batch from the static
    buffers x and y."""
    model = models.build(spec.model, spec.seed).to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer, _ = make_optimizer(spec, model, total_steps=1)
    x = torch.zeros(spec.batch_size, 3, 32, 32, device=device).to(memory_format=memory_format)
    y = torch.zeros(spec.batch_size, dtype=torch.long, device=device)

    dtype = AUTOCAST[spec.precision]
    # The autocast cache would keep casts of the weights from one replay to the next.
    cast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False)

    def step() -> None:
        with cast:
            loss = F.cross_entropy(model(x).float(), y)
        # Gradients are overwritten in place, not freed: a captured graph keeps its addresses.
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()

    return step, x, y


def synthetic_batches(
    batch_size: int, device: torch.device, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return [
        (
            torch.randn(batch_size, 3, 32, 32, generator=generator).to(device),
            torch.randint(0, 10, (batch_size,), generator=generator).to(device),
        )
        for _ in range(POOL_BATCHES)
    ]


def floor_cuda(spec: pb.TrainSpec, channels_last: bool, steps: int, warmup: int) -> list[float]:
    """Milliseconds of each of `steps` replays of the captured step."""
    device = torch.device("cuda", 0)
    step, x, y = make_step(spec, device, channels_last)
    batches = synthetic_batches(spec.batch_size, device, spec.seed)
    x.copy_(batches[0][0])
    y.copy_(batches[0][1])
    # Warm-up on a side stream (cuDNN plans, the optimiser's momentum buffers, the allocator's
    # pools) so that capture records only the steady-state kernels.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()

    events = [torch.cuda.Event(enable_timing=True) for _ in range(2 * steps)]
    for i in range(warmup + steps):
        images, labels = batches[i % POOL_BATCHES]
        timed = i >= warmup
        if timed:
            events[2 * (i - warmup)].record()
        x.copy_(images, non_blocking=True)
        y.copy_(labels, non_blocking=True)
        graph.replay()
        if timed:
            events[2 * (i - warmup) + 1].record()
    torch.cuda.synchronize()
    return [events[2 * i].elapsed_time(events[2 * i + 1]) for i in range(steps)]


def eager_cpu(spec: pb.TrainSpec, channels_last: bool, steps: int, warmup: int) -> list[float]:
    """Milliseconds of each of `steps` eager runs of the same step function on the CPU."""
    device = torch.device("cpu")
    step, x, y = make_step(spec, device, channels_last)
    batches = synthetic_batches(spec.batch_size, device, spec.seed)
    times_ms = []
    for i in range(warmup + steps):
        images, labels = batches[i % POOL_BATCHES]
        start = time.perf_counter()
        x.copy_(images)
        y.copy_(labels)
        step()
        if i >= warmup:
            times_ms.append((time.perf_counter() - start) * 1000)
    return times_ms


def measure(model: str, args: argparse.Namespace) -> Floor:
    spec = with_defaults(
        pb.TrainSpec(
            model=pb.ModelSpec(name=model),
            batch_size=args.batch_size,
            precision=args.precision,
            device=args.device,
            # Autotuning costs only warm-up time, which the floor does not count.
            cudnn_benchmark=args.device == "cuda",
        )
    )
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    configure(spec, device)
    if device.type == "cuda":
        times_ms = floor_cuda(spec, args.channels_last, args.steps, args.warmup)
        method, device_name = CUDA_GRAPH, torch.cuda.get_device_name(device)
    else:
        times_ms = eager_cpu(spec, args.channels_last, args.steps, args.warmup)
        method, device_name = EAGER_CPU, "cpu"
    ordered = sorted(times_ms)
    return Floor(
        model=model,
        batch_size=spec.batch_size,
        device_name=device_name,
        precision=spec.precision,
        channels_last=args.channels_last,
        step_ms_median=statistics.median(ordered),
        step_ms_p90=ordered[int(0.9 * (len(ordered) - 1))],
        steps_timed=len(ordered),
        method=method,
    )


def write(floors: list[Floor], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [dataclasses.asdict(f) for f in floors]
    with open(out / "floor.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "floor.json").write_text(json.dumps(rows, indent=2) + "\n")


def model_list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in MODELS]
    if not items or unknown:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or 'nothing'} given; models are: {', '.join(MODELS)}"
        )
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", type=model_list, default=list(MODELS), help="comma-separated")
    p.add_argument("--batch-size", type=int, default=with_defaults(pb.TrainSpec()).batch_size)
    p.add_argument("--precision", choices=tuple(AUTOCAST), default="fp32")
    p.add_argument("--channels-last", action="store_true", help="NHWC activations and weights")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--steps", type=int, default=200, help="timed replays per model")
    p.add_argument("--warmup", type=int, default=20, help="untimed replays before those")
    p.add_argument("--out", type=Path, default=Path("results/floor"))
    args = p.parse_args(argv)
    for name in ("batch_size", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be 0 or more, not {args.warmup}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"benchmarks/floor.py needs an NVIDIA GPU: PyTorch {torch.__version__} (CUDA "
            f"{torch.version.cuda}) sees none. Run it on the GPU host; `--device cpu` only runs "
            "the same step eagerly, as a check of the code, not a floor.",
            file=sys.stderr,
        )
        return 2
    floors = []
    for model in args.models:
        floor = measure(model, args)
        floors.append(floor)
        print(
            f"{model:13} batch {floor.batch_size:4} {floor.precision}"
            f"{' channels-last' if floor.channels_last else ''} on {floor.device_name}: "
            f"{floor.step_ms_median:8.2f} ms/step median, p90 {floor.step_ms_p90:.2f} "
            f"({floor.steps_timed} steps; {floor.method})",
            flush=True,
        )
    write(floors, args.out)
    print(f"wrote {args.out / 'floor.csv'} and {args.out / 'floor.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
