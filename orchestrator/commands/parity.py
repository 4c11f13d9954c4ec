"""`fwbench parity`: check that every framework builds the same models."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from orchestrator.commands import common
from orchestrator.inputs import options
from orchestrator.running import parity_check
from services.common import frameworks
from services.common import spec as specs


def add_arguments(sub) -> None:
    par = common.run_like(
        sub,
        "parity",
        "check that every framework builds the same models",
        list(frameworks.NAMES),
        list(specs.MODELS),
    )
    par.add_argument(
        "--out",
        type=Path,
        default=Path("results/parity"),
        help="for parity.csv (default: %(default)s)",
    )
    par.add_argument(
        "--probe-batch-size",
        type=options.positive_int,
        default=8,
        help="images whose logits compare (default: %(default)s)",
    )
    par.add_argument(
        "--train-steps",
        type=options.non_negative_int,
        default=0,
        help="also take N training steps on the probe batch and compare their losses (after "
        "an update, MobileNet v1's differ by ~1e-3 from fp32 rounding alone) (default: 0)",
    )
    options.add_spec_arguments(par)
    options.add_launch_arguments(par)
    par.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    spec = options.validated(args, args.models)
    addresses = common.service_arguments(args, args.frameworks)
    out = common.results_dir(args.out)
    with common.services(args, args.frameworks, addresses, out / "logs") as pool:
        checked = parity_check.check(
            pool.clients(), spec, args.models, args.probe_batch_size, args.train_steps
        )
    path = parity_check.write_csv(checked, out)
    parity_check.show(checked, console)
    console.print(f"Saved {path}")
    return 0 if parity_check.passed(checked) else 1
