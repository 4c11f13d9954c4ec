"""`fwbench data prepare`: decode a dataset once into the directory every service reads."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from orchestrator.data import preparation
from orchestrator.inputs import options
from services.common.datasets import SYNTHETIC_TEST, SYNTHETIC_TRAIN


def add_arguments(sub) -> None:
    data = sub.add_parser("data", help="prepare datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prep = data_sub.add_parser(
        "prepare", help="decode a dataset once into the directory every service reads"
    )
    prep.add_argument(
        "--source",
        required=True,
        help="cifar10 (official archive), synthetic, or an ImageFolder directory or "
        ".tar/.tar.gz of one (train/<class>/*, test/<class>/*)",
    )
    prep.add_argument("--out", type=Path, required=True, help="dataset directory to create")
    prep.add_argument(
        "--archive",
        type=Path,
        help="cifar10: a local cifar-10-python.tar.gz (else downloaded into data/downloads/)",
    )
    prep.add_argument(
        "--seed", type=int, default=0, help="synthetic: generator seed (default: %(default)s)"
    )
    prep.add_argument(
        "--train-count",
        type=options.positive_int,
        default=SYNTHETIC_TRAIN,
        help="synthetic: train images (default: %(default)s)",
    )
    prep.add_argument(
        "--test-count",
        type=options.positive_int,
        default=SYNTHETIC_TEST,
        help="synthetic: test images (default: %(default)s)",
    )
    prep.add_argument("--force", action="store_true", help="replace an existing --out")
    prep.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    preparation.prepare(
        args.source,
        args.out,
        archive=args.archive,
        seed=args.seed,
        train_count=args.train_count,
        test_count=args.test_count,
        replace=args.force,
        console=console,
    )
    return 0
