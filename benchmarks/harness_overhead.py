"""What does fwbench's harness cost? The PyTorch service (worker process, shared schedule with
on-device augmentation, recorder, gRPC stream, sampler) against a bare loop on the same model and
batch size, in one invocation.

    .venvs/orchestrator/bin/python -m benchmarks.harness_overhead --model resnet50 --device cuda

Prints the ratio of steady-state step times (service / bare); 1.00 would be a free harness. The
bare loop trains on one fixed random batch, so the ratio also prices the per-step data pipeline
(gather, crop, flip, normalise), which a real run cannot skip.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from orchestrator import launchers
from orchestrator.client import TrainerClient
from orchestrator.options import synthetic_spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-limit", type=int, default=16000)
    args = p.parse_args()

    spec = synthetic_spec(
        args.model,
        train_limit=args.train_limit,
        test_limit=256,
        batch_size=args.batch_size,
        device=args.device,
        run_id="harness",
    )
    with (
        tempfile.TemporaryDirectory() as logs,
        launchers.local(["pytorch"], Path(logs)) as launched,
    ):
        client = TrainerClient("pytorch", launched.address("pytorch"))
        outcome = client.run(spec)
    if not outcome.ok:
        raise SystemExit(f"the service's run failed: {outcome.error}")
    device, end = outcome.started.device_name, outcome.end
    bare_device = "cpu" if device == "cpu" else "cuda"
    bare = json.loads(
        subprocess.run(
            [str(launchers.venv_python("pytorch")), "-m", "benchmarks.bare_pytorch",
             "--model", args.model, "--batch-size", str(args.batch_size),
             "--steps", str(min(1000, args.train_limit // args.batch_size)),
             "--device", bare_device],
            cwd=launchers.ROOT, check=True, capture_output=True, text=True,
        ).stdout.splitlines()[-1]
    )  # fmt: skip
    service_ms = end.step_time_median_s * 1000
    bare_ms = bare["step_time_median_s"] * 1000
    print(
        f"pytorch {args.model}, batch {args.batch_size}, {device}:\n"
        f"  steady-state step: service {service_ms:.2f} ms, bare loop {bare_ms:.2f} ms, "
        f"ratio service/bare = {service_ms / bare_ms:.3f}"
    )


if __name__ == "__main__":
    main()
