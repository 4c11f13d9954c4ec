"""`fwbench run`: train the same spec in each framework and compare (also --resume DIR)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
from pathlib import Path

from google.protobuf import json_format
from rich.console import Console

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import report
from orchestrator.commands import common
from orchestrator.errors import UserError
from orchestrator.inputs import options
from orchestrator.results import journal, schema
from orchestrator.running import parity_check
from orchestrator.running.pool import Pool
from orchestrator.running.runner import Experiment, Interrupted, run_experiment
from services.common import frameworks
from services.common import spec as specs


def add_arguments(sub) -> None:
    run = common.run_like(
        sub,
        "run",
        "train the same spec in each framework and compare",
        list(frameworks.NAMES),
        ["resnet50"],
    )
    run.add_argument("--repeats", type=options.positive_int, default=1, help="(default: 1)")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="results directory; {time} becomes a UTC time")
    where.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="finish the runs that a stopped `fwbench run` left in DIR, with its spec",
    )
    run.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    options.add_spec_arguments(run)
    options.add_launch_arguments(run)
    run.add_argument("--allow-mismatch", action="store_true", help=common.ALLOW_MISMATCH_HELP)
    run.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console, extra_files: dict | None = None) -> int:
    if args.resume:
        out, args, spec = args.resume, *_resumed(args)
        recorded = _journal_to_resume(out, console)
    else:
        out = common.results_dir(args.out)
        journal.check_free(out, args.overwrite)
        spec = options.validated(args, args.models)
    common.check_device(args, spec)
    addresses = common.service_arguments(args, args.frameworks)
    common.local_gpus(args, spec.gpus)  # refused before anything starts
    experiment = Experiment(args.frameworks, args.models, args.repeats, spec)
    interrupted = False
    with common.services(args, args.frameworks, addresses, out / "logs", spec) as pool:
        check_devices_served(spec, pool)
        for member in pool.members:
            d = member.described
            console.print(
                f"{member.name}: {d.framework_version} · devices {', '.join(d.devices)} · "
                f"import {d.import_s:.1f} s",
                markup=False,
            )
        if pool.parallel():
            placements = len({m.placement for m in pool.members})
            console.print(
                f"{len(pool.members)} services on {placements} placements (GPUs, or the CPUs of "
                "a node): runs on different ones go at once"
            )
        writer = (
            journal.ResultsWriter.resume(out, recorded)
            if args.resume
            else journal.ResultsWriter(out, overwrite=args.overwrite)
        )
        try:
            for name, source in (extra_files or {}).items():
                shutil.copyfile(source, out / name)
            if not args.resume:
                writer.write_context(
                    common.context(
                        spec,
                        pool,
                        frameworks=args.frameworks,
                        models=args.models,
                        repeats=args.repeats,
                    )
                )
            if len(pool.frameworks()) > 1:
                check_parity(args, spec, pool.clients(), out, console)
            rows = run_experiment(experiment, pool, writer, console)
        except Interrupted:
            interrupted = True
            # A second Ctrl-C while the report is written leaves at once.
            signal.signal(signal.SIGINT, lambda *_: os._exit(130))
            rows = writer.rows
        finally:
            writer.close()
    rendered = report.render(out)
    for line in rendered.verdict:
        console.print(line, markup=False)
    console.print(
        f"Report: {rendered.html_path} (and {rendered.markdown_path.name}, {schema.RUNS_CSV}, "
        f"{schema.EPOCHS_CSV})"
    )
    if interrupted:
        console.print(
            f"interrupted: finished runs are kept; `fwbench run --resume {out}` runs the rest",
            markup=False,
        )
        return 130
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        console.print(f"[red]{len(failed)} of {len(rows)} runs did not end ok[/red]")
        return 1
    return 0


def _resumed(args: argparse.Namespace) -> tuple[argparse.Namespace, pb.TrainSpec]:
    """The arguments and spec of the run being resumed, from its context.json; options given now
    must not change them (a changed spec would mix two experiments in one result set)."""
    context_path = args.resume / schema.CONTEXT_JSON
    if not context_path.exists():
        raise UserError(
            f"--resume {args.resume}: no {schema.CONTEXT_JSON}; is it a results directory?"
        )
    try:
        context = json.loads(context_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"--resume {args.resume}: {context_path} is not JSON ({e})") from e
    missing = [key for key in ("spec", "frameworks", "models", "repeats") if key not in context]
    if missing:
        raise UserError(
            f"--resume {args.resume}: {context_path} lacks {', '.join(missing)}: only what "
            "`fwbench run` (or `fwbench suite`) wrote can be resumed"
        )
    given = {dest: getattr(args, dest) for dest in options.spec_dests()}
    changed = [f"--{dest.replace('_', '-')}" for dest, value in given.items() if value is not None]
    if changed:
        raise UserError(
            f"--resume {args.resume} keeps the spec it started with; drop {', '.join(changed)}"
        )
    resumed = argparse.Namespace(**vars(args))
    for key in ("frameworks", "models", "repeats"):
        setattr(resumed, key, context[key])
    spec = json_format.ParseDict(context["spec"], pb.TrainSpec())
    for model in resumed.models:
        specs.validate(options.for_model(spec, model))
    return resumed, spec


def _journal_to_resume(out: Path, console: Console) -> journal.Journal:
    """The journal of the result set being resumed, checked before any service starts: one
    that cannot be rebuilt from is refused with nothing changed."""
    path = out / schema.EVENTS_JSONL
    if not path.exists():
        raise UserError(f"--resume {out}: no {schema.EVENTS_JSONL} there, so nothing to resume")
    recorded = journal.read_journal(path)
    recorded.check()
    for line in recorded.skipped(str(path)):
        console.print(line, markup=False)
    return recorded


def check_devices_served(spec, pool: Pool) -> None:
    if spec.device != "cpu" and spec.gpus > 1:
        # A remote service's GPUs are known only once it is described (a local one's are
        # checked before it starts): never a run on fewer GPUs than asked.
        for member in pool.members:
            found = len(member.described.gpu_uuids)
            if found < spec.gpus:
                raise UserError(
                    f"--gpus {spec.gpus}: the {member.name} service has {found} GPU(s); "
                    f"use --gpus {max(found, 1)} or fewer, or a service with {spec.gpus} GPUs"
                )
    if spec.device != "cuda":
        return
    for member in pool.members:
        if not any(device.startswith("cuda") for device in member.described.devices):
            raise UserError(
                f"--device cuda: the {member.name} service sees no GPU (devices: "
                f"{', '.join(member.described.devices)}); use --device cpu or auto"
            )


def check_parity(args, spec, clients: dict, out: Path, console: Console) -> None:
    """Before training: the models compared, saved as parity.csv beside the results. Canonical
    models that differ are refused unless --allow-mismatch; library models never are."""
    checked = parity_check.check(clients, spec, args.models)
    parity_check.write_csv(checked, out)
    parity_check.show(checked, console)
    failed = [r.model for r in checked if not r.passed]
    if failed and not args.allow_mismatch:
        raise UserError(
            f"model parity fails for {', '.join(failed)} (see {out / schema.PARITY_CSV}): "
            "the frameworks' models differ, so the results would not compare frameworks; "
            "pass --allow-mismatch to train anyway"
        )
