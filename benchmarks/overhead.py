"""What does fwbench cost? The same spec trained through fwbench — service, fresh worker process,
recorder hooks, progress syncs, the telemetry sampler at 100 ms, the gRPC stream — and by a bare
loop of the same framework in the same environment (benchmarks/bare_<framework>.py: the trainer's
own pipeline and step, nothing else), interleaved in one invocation.

    .venvs/orchestrator/bin/python -m benchmarks.overhead                       (CPU defaults)
    .venvs/orchestrator/bin/python -m benchmarks.overhead --frameworks pytorch \
        --models resnet50,mobilenet_v2 --modes default,tuned --device cuda --train-limit 16000 \
        --pairs 5

Each pair runs the service and the bare loop back to back, in ABBA order (service-bare,
bare-service, ...), so a steady drift of the host penalises neither. Both report the same
statistic, measured the same way: the median steady-state step time from windows between device
synchronisations after warm-up (RunEnd.step_time_median_s; benchmarks/bare.py). A pair's ratio
service/bare is fwbench's cost at that moment; 1.00 would be a free harness. The median ratio over
pairs is printed with its min–max and interquartile range, and beside it the ratio of each side's
fastest run (best of N, as timeit reports it): a host that intermittently slows a process down
only ever adds time, so the fastest runs are the least disturbed ones.

Every framework of services/common/frameworks.py that has a benchmarks/bare_<name>.py is measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.inputs.options import csv_choice, synthetic_spec
from orchestrator.running import launchers
from orchestrator.running.client import TrainerClient
from services.common import frameworks, schedule
from services.common.spec import MODELS, MODES
from services.common.steady import WARMUP_STEPS

BENCHMARKS = Path(__file__).resolve().parent


def measurable_frameworks() -> list[str]:
    """The registered frameworks that have a bare loop to be measured against."""
    return [f for f in frameworks.NAMES if (BENCHMARKS / f"bare_{f}.py").exists()]


@dataclasses.dataclass
class Pair:
    service_step_s: float
    bare_step_s: float

    @property
    def ratio(self) -> float:
        return self.service_step_s / self.bare_step_s


@dataclasses.dataclass
class Spread:
    median: float
    minimum: float
    maximum: float
    q1: float
    q3: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if len(values) == 1:
            q1 = q3 = values[0]
        else:
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(statistics.median(values), min(values), max(values), q1, q3)


def run_service(client: TrainerClient, spec: pb.TrainSpec) -> tuple[float, str]:
    """(steady-state median step in s, device name) of one run through the service."""
    outcome = client.run(spec)
    if not outcome.ok:
        raise RuntimeError(
            f"the {client.framework} service's run {spec.run_id} failed: {outcome.error}"
        )
    if not outcome.end.step_time_median_s > 0:
        raise RuntimeError(
            f"the {client.framework} service's run {spec.run_id} timed no steady-state step: "
            f"every window between its syncs began within the {WARMUP_STEPS} warm-up steps; "
            "give a larger --train-limit"
        )
    return outcome.end.step_time_median_s, outcome.started.device_name


def run_bare(framework: str, spec: pb.TrainSpec, work_dir: Path) -> tuple[float, str]:
    """(steady-state median step in s, device name) of the bare loop, in a fresh process of the
    framework's venv (as the service's worker is)."""
    spec_file = work_dir / f"{spec.run_id}.spec"
    spec_file.write_bytes(spec.SerializeToString())
    done = subprocess.run(
        [
            str(launchers.venv_python(framework)),
            "-m",
            f"benchmarks.bare_{framework}",
            str(spec_file),
        ],
        cwd=launchers.ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"benchmarks/bare_{framework}.py exited with {done.returncode}:\n{done.stderr[-3000:]}"
        )
    result = json.loads(done.stdout.splitlines()[-1])
    return result["step_time_median_s"], result["device_name"]


def measure(
    framework: str, model: str, base: pb.TrainSpec, pairs: int, work_dir: Path
) -> tuple[list[Pair], str]:
    """`pairs` ABBA pairs of (service, bare) for one framework and model, printed as they come."""
    spec = pb.TrainSpec()
    spec.CopyFrom(base)
    spec.model.name = model
    results: list[Pair] = []
    with launchers.local([framework], work_dir / "logs") as launched:
        client = TrainerClient(framework, launched.address(framework))
        try:
            for index in range(pairs):
                spec.run_id = f"overhead-{framework}-{model}-{spec.mode}-{index}"
                # ABBA: even pairs run the service first, odd pairs the bare loop first.
                if index % 2 == 0:
                    service_s, device = run_service(client, spec)
                    bare_s, bare_device = run_bare(framework, spec, work_dir)
                else:
                    bare_s, bare_device = run_bare(framework, spec, work_dir)
                    service_s, device = run_service(client, spec)
                if bare_device != device:
                    raise RuntimeError(
                        f"the service trained on {device!r} but the bare loop on "
                        f"{bare_device!r}: their ratio would mean nothing"
                    )
                pair = Pair(service_s, bare_s)
                results.append(pair)
                print(
                    f"  pair {index} ({'service, bare' if index % 2 == 0 else 'bare, service'}): "
                    f"service {service_s * 1000:8.2f} ms  bare {bare_s * 1000:8.2f} ms  "
                    f"ratio {pair.ratio:.3f}",
                    flush=True,
                )
        finally:
            client.close()
    return results, device


def summary_line(framework: str, model: str, mode: str, device: str, pairs: list[Pair]) -> str:
    ratios = Spread.of([p.ratio for p in pairs])
    service_ms = statistics.median(p.service_step_s for p in pairs) * 1000
    bare_ms = statistics.median(p.bare_step_s for p in pairs) * 1000
    # Best of N, as timeit reports: a host that slows some processes down (a busy neighbour, a
    # thread on a descheduled core) only ever adds time, so each side's fastest run is the one
    # least disturbed; their ratio stays readable when a pair's ratio is noise.
    best = min(p.service_step_s for p in pairs) / min(p.bare_step_s for p in pairs)
    return (
        f"{framework} {model} {mode} ({device}): ratio service/bare median {ratios.median:.3f} "
        f"(min–max {ratios.minimum:.3f}–{ratios.maximum:.3f}, IQR {ratios.q1:.3f}–{ratios.q3:.3f}, "
        f"{len(pairs)} pairs), best of {len(pairs)} {best:.3f}; step median service "
        f"{service_ms:.2f} ms, bare {bare_ms:.2f} ms"
    )


def base_spec(args: argparse.Namespace) -> pb.TrainSpec:
    spec = synthetic_spec(
        args.models[0],
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        batch_size=args.batch_size,
        device=args.device,
    )
    # Set even when it equals the default: the interval measured is the one printed.
    spec.sample_interval_ms = args.sample_interval_ms
    return spec


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    measurable = tuple(measurable_frameworks())
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--frameworks",
        type=csv_choice(measurable, "framework (with a benchmarks/bare_<name>.py)"),
        default=list(measurable),
        help="comma-separated",
    )
    p.add_argument(
        "--models",
        type=csv_choice(MODELS, "model"),
        default=["mobilenet_v2"],
        help="comma-separated",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    # Enough steps after the recorder's 10 warm-up steps for a stable median on 2 CPU cores.
    p.add_argument("--train-limit", type=int, default=1536)
    p.add_argument("--test-limit", type=int, default=64, help="evaluated by the service only")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument(
        "--modes",
        type=csv_choice(MODES, "mode"),
        default=["default"],
        help="comma-separated; each measured against the bare loop of the same mode",
    )
    p.add_argument(
        "--cpus",
        type=cpu_list,
        help="pin this benchmark and every process it starts (service, worker, bare loop) to "
        "these CPUs, e.g. 4-7: the same cores for both sides of every pair (default: unpinned)",
    )
    p.add_argument(
        "--sample-interval-ms",
        type=int,
        default=100,
        help="the service's telemetry interval; 0 turns the sampler off, to price it alone",
    )
    args = p.parse_args(argv)
    for name in ("batch_size", "train_limit", "test_limit", "pairs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if args.sample_interval_ms < 0:
        p.error(f"--sample-interval-ms must be 0 (off) or more, not {args.sample_interval_ms}")
    # A steady-state window needs steps after the warm-up and before the epoch's last step.
    least = (WARMUP_STEPS + 2) * args.batch_size
    if schedule.steps_per_epoch(args.train_limit, args.batch_size) < WARMUP_STEPS + 2:
        p.error(
            f"--train-limit {args.train_limit} makes fewer than {WARMUP_STEPS + 2} steps of "
            f"batch {args.batch_size}, and the first {WARMUP_STEPS} are warm-up, not timed: "
            f"give at least {least}"
        )
    return args


def cpu_list(text: str) -> set[int]:
    """ "4-7" or "0,2,4" (as taskset -c takes them) -> the CPU numbers, each one this host has."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CPU list such as 4-7 or 0,2") from None
    missing = sorted(cpus - os.sched_getaffinity(0))
    if not cpus or missing:
        raise argparse.ArgumentTypeError(
            f"CPUs {missing or text} are not available to this process (it may use "
            f"{','.join(map(str, sorted(os.sched_getaffinity(0))))})"
        )
    return cpus


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpus:
        # Inherited by every process started from here: the service, its workers, the bare loops.
        os.sched_setaffinity(0, args.cpus)
    base = base_spec(args)
    telemetry = f"every {args.sample_interval_ms} ms" if args.sample_interval_ms else "off"
    pinned = f", CPUs {sorted(args.cpus)}" if args.cpus else ""
    summaries = []
    try:
        with tempfile.TemporaryDirectory(prefix="fwbench-overhead-") as work:
            for framework in args.frameworks:
                for model in args.models:
                    for mode in args.modes:
                        print(
                            f"{framework} {model}, batch {args.batch_size}, {args.train_limit} "
                            f"samples, device {args.device}, mode {mode}, telemetry "
                            f"{telemetry}{pinned}:",
                            flush=True,
                        )
                        base.mode = mode
                        pairs, device = measure(framework, model, base, args.pairs, Path(work))
                        summaries.append(summary_line(framework, model, mode, device, pairs))
    except launchers.LauncherError as e:
        print(f"benchmarks/overhead.py: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"benchmarks/overhead.py: {e}", file=sys.stderr)
        return 1
    finally:
        # What was measured before a failure is still worth reading.
        if summaries:
            print("\n" + "\n".join(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
