"""Where tuned JAX's time goes: the training program of a run beside JAX's floor, piece by piece,
measured side by side in one process on one device.

    .venvs/jax/bin/python -m benchmarks.jax_dispatch --models mobilenet_v2,resnet50

The floor's job per model (the seed spec, tuned, tf32, batch 32, K=32 steps per dispatch):
  floor      K steps on one resident batch (benchmarks/floors/jax.py's program), waiting for each
             dispatch, as cut does (the floor itself queues the next dispatch first)
  cut        K steps on batches cut on the device from a CIFAR-10-sized dataset, as a run's tuned
             program cuts them (services/jax/trainer.py Pipeline.cut), waiting for each dispatch
  cut-async  the same, waiting every 8 dispatches (a run waits about every 0.25 s)
  dispatch   the host's time for one such call to return (JAX dispatches asynchronously)
  default    the default mode's nnx.jit step, one per dispatch, waiting every 32 steps
  eval       the default mode's nnx.jit eval step per test batch, waiting at the end
  eval-all   the tuned mode's evaluation: the whole test split in one compiled program
Each line gives ms per step (or per call) and the ratio to the floor. XLA_FLAGS is process-wide,
so a comparison of XLA's options is two runs of this module, each printing the flags it ran with.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
from flax import nnx

from benchmarks.floors import common
from benchmarks.floors import jax as floors_jax
from services.common import datasets, schedule
from services.jax import trainer

ASYNC_WAIT_EVERY = 8
PARTS = ("floor", "cut", "default")


def timed_ms(call, repeats: int, per: int, wait) -> tuple[float, float]:
    """(Median milliseconds per unit of `repeats` timed calls of `per` units each, seconds of the
    untimed first call before them: compilation included); `wait` blocks until the device is
    done."""
    start = time.perf_counter()
    call()
    wait()
    first_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        wait()
        times.append((time.perf_counter() - start) * 1e3 / per)
    return statistics.median(times), first_s


def done(step: trainer.FunctionalStep) -> None:
    jax.block_until_ready((step.leaves, step.sums))


def measure(name: str, args: argparse.Namespace) -> dict[str, float]:
    spec = common.job_spec(args, name)
    device = trainer.resolve_device(args.device)
    trainer.configure(spec, device)
    k, size = args.steps_per_call, spec.batch_size
    smoothing = spec.optimizer.label_smoothing
    dataset = datasets.synthetic(spec.seed, 50_000, 10_000)
    pipeline = trainer.Pipeline(dataset, size)
    pipeline.set_epoch(schedule.epoch_plan(spec.seed, 0, 50_000, "crop-flip"))
    results: dict[str, float] = {}
    parts = args.parts

    def objects():
        return trainer.training_objects(spec, spec.model, total_steps=1)

    # floor: one resident batch, benchmarks/floors/jax.py's program.
    batch = pipeline.train_batch(0)
    floor = trainer.FunctionalStep(*objects(), smoothing, floors_jax.resident)
    results["floor"], results["floor first call s"] = timed_ms(
        lambda: floor(batch, k, size), args.replays, k, lambda: done(floor)
    )

    if "cut" not in parts:
        return results
    tuned = trainer.FunctionalStep(*objects(), smoothing, trainer.Pipeline.cut)

    def wait():
        done(tuned)

    calls = iter(range(10**9))

    def cut_call():
        tuned(pipeline.device_data(next(calls) * k % (1500 - k)), k, size)

    results["cut"], results["cut first call s"] = timed_ms(cut_call, args.replays, k, wait)

    def cut_async():
        for _ in range(ASYNC_WAIT_EVERY):
            cut_call()

    results["cut-async"], _ = timed_ms(cut_async, args.replays // 4, k * ASYNC_WAIT_EVERY, wait)
    host = []
    for _ in range(args.replays):
        wait()
        start = time.perf_counter()
        cut_call()
        host.append((time.perf_counter() - start) * 1e3)
    wait()
    results["dispatch (host ms per call)"] = statistics.median(host)

    if "default" not in parts:
        return results
    model, optimizer, scale = objects()
    steps = iter(range(10**9))

    def default_calls():
        for _ in range(k):
            x, y = pipeline.train_batch(next(steps) % 1500)
            trainer.train_step(model, optimizer, scale, x, y, smoothing)

    results["default"], _ = timed_ms(
        default_calls, max(args.replays // 8, 5), k, lambda: jax.block_until_ready(nnx.state(model))
    )

    model.eval()
    test = list(pipeline.test_batches())[:100]

    def evaluate():
        return [trainer.eval_step(model, x, y) for x, y in test]

    outputs: list = []
    results["eval (ms per batch)"], _ = timed_ms(
        lambda: outputs.append(evaluate()), 5, len(test), lambda: jax.block_until_ready(outputs)
    )
    p = pipeline

    def evaluate_all():
        outputs.append(
            trainer.evaluate_all(model, p.test_images, p.test_labels, p.mean, p.std, size)
        )

    results["eval-all (ms per batch)"], _ = timed_ms(
        evaluate_all, 5, len(p.test_labels) // size, lambda: jax.block_until_ready(outputs)
    )
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_job_options(p)
    p.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="floor always; cut adds cut, cut-async and dispatch; default adds default, eval and "
        "eval-all",
    )
    p.add_argument("--json", help="append one JSON line per model to this file")
    args = p.parse_args(argv)
    common.check_job_options(p, args)
    args.parts = args.parts.split(",")
    if unknown := set(args.parts) - set(PARTS):
        p.error(f"--parts: {', '.join(sorted(unknown))} not known; choose from {', '.join(PARTS)}")
    flags = os.environ.get("XLA_FLAGS", "")
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; XLA_FLAGS={flags!r}")
    for name in args.models:
        results = measure(name, args)
        floor = results["floor"]
        for what, value in results.items():
            ratio = "" if " s" in what or "(" in what else f"  {value / floor:5.2f}x floor"
            print(f"{name:13s} {what:30s} {value:9.3f}{ratio}", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"model": name, "xla_flags": flags, **results}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
