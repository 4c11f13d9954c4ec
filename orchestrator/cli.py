"""`fwbench`: the command line, the top layer: it parses, then calls the layers below.

fwbench run           train the same spec in each framework and compare
fwbench suite FILE    run an experiment written down as data (suites/seed.yaml)
fwbench report DIR    rebuild a results directory's CSVs and report from its events.jsonl
fwbench compare A B   ratio tables between two result sets
fwbench sweep DIR...  throughput and GPU utilisation against batch size, over a batch-size sweep
fwbench parity        check that every framework builds the same models
fwbench debug-probe   inject the same mistakes in every framework: what does each tell you?
fwbench data prepare  decode a dataset once into the directory every service reads
fwbench friction      measure what installing and starting each framework costs
"""

from __future__ import annotations

import argparse
import os
import sys

# gRPC's core writes every failed TLS handshake to stderr (gRPC 1.85: at INFO, unasked), above
# fwbench's own message saying what is wrong. Errors only, unless whoever runs fwbench chose a
# verbosity. Read when gRPC first loads: before the imports below.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from rich.console import Console
from rich.text import Text

from orchestrator.commands import (
    common,
    compare,
    data,
    debug_probe,
    friction,
    parity,
    report,
    run,
    suite,
    sweep,
)
from orchestrator.errors import UserError
from orchestrator.report import provenance
from services.common import spec as specs

# In `fwbench --help`'s order; each module adds its subcommand, its arguments and its handler.
COMMANDS = (run, suite, debug_probe, report, compare, sweep, parity, data, friction)


def version() -> str:
    """fwbench's version and the commit it runs from, with where that was read."""
    return provenance.describe(provenance.fwbench_facts())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fwbench",
        description="Measure deep-learning frameworks on the same image-classification training "
        "job, side by side.",
        epilog=common.EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"fwbench {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    # soft_wrap: in logs and pipes (no terminal) long lines stay whole instead of breaking at 80.
    console = Console(stderr=False, highlight=False, soft_wrap=True)
    try:
        sys.exit(args.handler(args, console))
    except (UserError, specs.SpecError) as e:
        # Text, not markup: a message may hold brackets ("[/job:localhost/...]").
        console.print(Text(f"fwbench {args.command}: {e}", style="red"))
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: results written so far are kept")
        sys.exit(130)
    except OSError as e:
        # A full disk or a folder taken away mid-run: everything finished is already on disk.
        console.print(Text(f"fwbench {args.command}: {e}", style="red"))
        sys.exit(2)
