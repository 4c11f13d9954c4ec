"""`fwbench`: the command line.

fwbench run     train the same spec in each framework and compare
fwbench report  render report.md/report.html again from a results directory
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path

from google.protobuf import json_format
from rich.console import Console

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import launchers, report
from orchestrator.client import TrainerClient
from orchestrator.results import ResultsWriter
from orchestrator.runner import Experiment, run_experiment
from services.common import spec as specs

FRAMEWORKS = ("pytorch", "tensorflow")


def _csv_choice(allowed: tuple[str, ...], what: str):
    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{what} {', '.join(bad) or '(none)'} not known; choose from {', '.join(allowed)}"
            )
        return items

    return parse


def add_spec_arguments(p: argparse.ArgumentParser) -> None:
    """The options that make a TrainSpec (shared by run and suite)."""
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--dataset",
        default="synthetic",
        help="synthetic, cifar10, or a directory prepared by `fwbench data prepare`",
    )
    p.add_argument("--data-dir", type=Path, help="where the prepared cifar10 dataset lives")
    p.add_argument("--train-limit", type=int, default=0, help="use the first N training images")
    p.add_argument("--test-limit", type=int, default=0, help="use the first N test images")
    p.add_argument("--augment", choices=specs.AUGMENTS, default="crop-flip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=specs.DEVICES, default="auto")
    p.add_argument("--precision", choices=specs.PRECISIONS, default="fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile / XLA jit_compile")
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument("--architecture", choices=specs.ARCHITECTURES, default="canonical")
    p.add_argument("--init", choices=specs.INITS, default="shared")
    p.add_argument("--optimizer", choices=specs.OPTIMIZERS, default="sgd")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--lr-schedule", choices=specs.LR_SCHEDULES, default="constant")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument(
        "--sample-interval-ms",
        type=int,
        default=100,
        help="NVML/host sampling period; 0 disables sampling",
    )


def add_launch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--launcher", choices=("local", "remote"), default="local")
    p.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="address of a running service (with --launcher remote)",
    )


def build_spec(args: argparse.Namespace) -> pb.TrainSpec:
    data = pb.DataSpec(
        train_limit=args.train_limit, test_limit=args.test_limit, augment=args.augment
    )
    if args.dataset == "synthetic":
        data.source = "synthetic"
    else:
        from orchestrator import data as datasets

        data.source = "directory"
        data.data_dir = str(datasets.resolve(args.dataset, args.data_dir))
    spec = pb.TrainSpec(
        model=pb.ModelSpec(architecture=args.architecture, init=args.init, num_classes=10),
        data=data,
        optimizer=pb.OptimizerSpec(
            name=args.optimizer,
            learning_rate=args.lr,
            momentum=args.momentum,
            nesterov=args.nesterov,
            weight_decay=args.weight_decay,
            lr_schedule=args.lr_schedule,
            label_smoothing=args.label_smoothing,
        ),
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        cudnn_benchmark=args.cudnn_benchmark,
        sample_interval_ms=args.sample_interval_ms,
    )
    return specs.with_defaults(spec)


@contextlib.contextmanager
def services(args, frameworks: list[str], out_dir: Path):
    """{framework: TrainerClient} from the chosen launcher."""
    if args.launcher == "local":
        launch = launchers.local(frameworks, out_dir / "logs")
    else:
        launch = launchers.remote(frameworks, launchers.parse_services(args.service))
    with launch as addresses:
        clients = {f: TrainerClient(f, a) for f, a in addresses.items()}
        try:
            yield clients
        finally:
            for client in clients.values():
                client.close()


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    spec = build_spec(args)
    for model in args.models:  # fail before any service starts, naming the field
        spec.model.name = model
        specs.validate(spec)
    experiment = Experiment(args.frameworks, args.models, args.repeats, spec)
    writer = ResultsWriter(args.out)
    try:
        with services(args, args.frameworks, args.out) as clients:
            described = {f: c.describe() for f, c in clients.items()}
            for framework, d in described.items():
                console.print(
                    f"{framework} {d.framework_version} · devices {', '.join(d.devices)} · "
                    f"import {d.import_s:.1f} s"
                )
            writer.write_context(
                {
                    "command": shlex.join(["fwbench", *sys.argv[1:]]),
                    "spec": json_format.MessageToDict(spec, preserving_proto_field_name=True),
                    "frameworks": args.frameworks,
                    "models": args.models,
                    "repeats": args.repeats,
                    "services": {
                        f: json_format.MessageToDict(d, preserving_proto_field_name=True)
                        for f, d in described.items()
                    },
                }
            )
            rows = run_experiment(experiment, clients, writer, console)
    finally:
        writer.close()
        report_path = report.render(args.out)
    failed = [r for r in rows if r["status"] != "ok"]
    console.print(report_path.read_text())
    console.print(f"Results in {args.out}/ (events.jsonl, runs.csv, epochs.csv, report.md)")
    if failed:
        console.print(f"[red]{len(failed)} of {len(rows)} runs failed[/red]")
        return 1
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    if not (args.dir / "runs.csv").exists():
        raise UserError(f"{args.dir} has no runs.csv: is it a results directory of `fwbench run`?")
    console.print(report.render(args.dir).read_text())
    return 0


class UserError(Exception):
    """Bad input: printed without a traceback, exit code 2."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fwbench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train the same spec in each framework and compare")
    run.add_argument(
        "--frameworks", type=_csv_choice(FRAMEWORKS, "framework"), default=list(FRAMEWORKS)
    )
    run.add_argument("--models", type=_csv_choice(specs.MODELS, "model"), default=["resnet50"])
    run.add_argument("--repeats", type=int, default=1)
    run.add_argument("--out", type=Path, required=True, help="results directory")
    add_spec_arguments(run)
    add_launch_arguments(run)
    run.set_defaults(handler=cmd_run)

    rep = sub.add_parser("report", help="render the report of a results directory again")
    rep.add_argument("dir", type=Path)
    rep.set_defaults(handler=cmd_report)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    console = Console(stderr=False, highlight=False)
    try:
        sys.exit(args.handler(args, console))
    except (UserError, specs.SpecError, launchers.LauncherError) as e:
        console.print(f"[red]fwbench {args.command}: {e}[/red]")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: results written so far are kept")
        sys.exit(130)
