"""What does telemetry cost? The same run with the sampler at 10 Hz and with it off, side by side.

    .venvs/orchestrator/bin/python -m benchmarks.sampler_overhead --framework pytorch \
        --model resnet50 --device cuda --train-limit 20000 --pairs 3

Runs alternate in ABBA order (off-on, on-off, ...) in one service so that drift (clocks,
temperature, the host) hits both arms alike; each pair's on/off throughput ratio and their
median are printed. A ratio near 1.00 means sampling is free.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import launchers
from orchestrator.client import TrainerClient
from orchestrator.options import synthetic_spec


def run_once(client: TrainerClient, spec: pb.TrainSpec) -> pb.RunEnd:
    outcome = client.run(spec)
    if not outcome.ok:
        raise RuntimeError(f"run {spec.run_id} failed: {outcome.error}")
    return outcome.end


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", default="pytorch")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--device", default="auto")
    p.add_argument("--train-limit", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--interval-ms", type=int, default=100)
    args = p.parse_args()

    base = synthetic_spec(
        args.model,
        train_limit=args.train_limit,
        test_limit=256,
        batch_size=args.batch_size,
        device=args.device,
    )
    arms = {"off": 0, "on": args.interval_ms}
    results: dict[str, list[pb.RunEnd]] = {arm: [] for arm in arms}
    with (
        tempfile.TemporaryDirectory() as logs,
        launchers.local([args.framework], Path(logs)) as launched,
    ):
        client = TrainerClient(args.framework, launched.address(args.framework))
        for pair in range(args.pairs):
            # ABBA order (off-on, on-off, ...): a steady drift penalises neither arm.
            order = list(arms.items()) if pair % 2 == 0 else list(reversed(arms.items()))
            for arm, interval_ms in order:
                spec = pb.TrainSpec()
                spec.CopyFrom(base)
                spec.run_id = f"{arm}-{pair}"
                spec.sample_interval_ms = interval_ms
                end = run_once(client, spec)
                results[arm].append(end)
                print(
                    f"pair {pair} sampler {arm:3}: {end.images_per_s:8.1f} img/s, "
                    f"step median {end.step_time_median_s * 1000:.2f} ms",
                    flush=True,
                )
    # Pairs are side by side in time, so each pair's ratio cancels the drift between pairs.
    pairs = list(zip(results["off"], results["on"], strict=True))
    throughput_ratios = [on.images_per_s / off.images_per_s for off, on in pairs]
    print(
        f"\n{args.framework} {args.model} on {args.device}, batch {args.batch_size}, "
        f"{args.pairs} pairs, sampler every {args.interval_ms} ms:\n"
        f"  throughput on/off per pair: {' '.join(f'{r:.3f}' for r in throughput_ratios)}\n"
        f"  median of the pairs' ratios: {statistics.median(throughput_ratios):.3f}"
    )


if __name__ == "__main__":
    main()
