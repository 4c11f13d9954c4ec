"""`fwbench suite FILE`: an experiment written down as data (inputs/suite_file.py reads it), run
by `fwbench run`'s code, then the debug probes the file asks for."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from orchestrator.commands import common, debug_probe, run
from orchestrator.inputs import options, suite_file
from orchestrator.results import schema
from services.common import spec as specs


def add_arguments(sub) -> None:
    suite_p = common.run_like(
        sub, "suite", "run an experiment written down as data (suites/*.yaml)", None, None
    )
    suite_p.add_argument("file", type=Path, help="a suite file, e.g. suites/seed.yaml")
    suite_p.add_argument("--repeats", type=options.positive_int, help="(default: the file's)")
    where = suite_p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="results directory (default: results/<name>)")
    where.add_argument("--resume", type=Path, metavar="DIR", help="as for `fwbench run`")
    suite_p.add_argument("--overwrite", action="store_true", help="replace results in --out")
    options.add_spec_arguments(suite_p)
    options.add_launch_arguments(suite_p)
    suite_p.add_argument("--allow-mismatch", action="store_true", help=common.ALLOW_MISMATCH_HELP)
    suite_p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    run_args = suite_file.run_arguments(args)
    console.print(
        f"suite {args.file}: {', '.join(run_args.frameworks)} × {', '.join(run_args.models)} × "
        f"{run_args.repeats} repeat(s), {run_args.epochs or specs.effective_default('epochs')} "
        f"epoch(s) of {run_args.dataset or options.DEFAULT_DATASET}",
        markup=False,
    )
    # The file is kept beside the results it produced.
    code = run.handle(run_args, console, extra_files={schema.SUITE_YAML: args.file})
    if run_args.debug_probe is None or code == 130:
        return code
    out = run_args.resume or run_args.out
    probe_args = argparse.Namespace(**vars(run_args) | vars(run_args.debug_probe))
    return max(code, debug_probe.run_debug_probes(probe_args, out, console))
