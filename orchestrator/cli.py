"""`fwbench`: the command line.

fwbench run           train the same spec in each framework and compare
fwbench report        render report.md/report.html again from a results directory
fwbench data prepare  decode a dataset once into the directory both services read
fwbench suite FILE    run an experiment written down as data (suites/seed.yaml)
fwbench friction      measure what installing and starting each framework costs
fwbench parity        check that every framework builds the same models
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from pathlib import Path

from google.protobuf import json_format
from rich.console import Console

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import launchers, parity, report
from orchestrator.client import TrainerClient
from orchestrator.results import ResultsExist, ResultsWriter
from orchestrator.runner import Experiment, run_experiment
from services.common import spec as specs
from services.common.data import SYNTHETIC_TEST, SYNTHETIC_TRAIN

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


def _whole_number(value: str, minimum: int) -> int:
    # Checked here, not only in the spec: in protobuf an unset 0 means "the default".
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= {minimum}, got {value!r}"
        ) from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
    return number


def positive_int(value: str) -> int:
    return _whole_number(value, 1)


def non_negative_int(value: str) -> int:
    return _whole_number(value, 0)


def add_spec_arguments(p: argparse.ArgumentParser) -> None:
    """The options that make a TrainSpec (shared by run and suite)."""
    p.add_argument("--epochs", type=positive_int, default=5)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument(
        "--dataset",
        default="synthetic",
        help="synthetic; cifar10; a directory prepared by `fwbench data prepare`; or an "
        "ImageFolder directory/archive, prepared into data/NAME on first use",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="where cifar10 or an ImageFolder source is prepared (default data/NAME)",
    )
    p.add_argument(
        "--archive",
        type=Path,
        help="the official cifar-10-python.tar.gz, for preparing cifar10 without downloading",
    )
    p.add_argument(
        "--train-limit", type=non_negative_int, default=0, help="use the first N training images"
    )
    p.add_argument(
        "--test-limit", type=non_negative_int, default=0, help="use the first N test images"
    )
    p.add_argument("--augment", choices=specs.AUGMENTS, default="crop-flip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=specs.DEVICES, default="auto")
    p.add_argument("--precision", choices=specs.PRECISIONS, default="fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile / XLA jit_compile")
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument("--architecture", choices=specs.ARCHITECTURES, default="canonical")
    p.add_argument(
        "--init",
        choices=specs.INITS,
        help="initial weights (default: shared for canonical models, framework for library ones)",
    )
    p.add_argument("--optimizer", choices=specs.OPTIMIZERS, default="sgd")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--lr-schedule", choices=specs.LR_SCHEDULES, default="constant")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument(
        "--sample-interval-ms",
        type=non_negative_int,
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
        data.data_dir = str(datasets.resolve(args.dataset, args.data_dir, args.archive))
    spec = pb.TrainSpec(
        model=pb.ModelSpec(
            architecture=args.architecture,
            # Library models have their own layouts: shared weights exist only for canonical ones.
            init=args.init or ("shared" if args.architecture == "canonical" else "framework"),
            num_classes=10,
        ),
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


def validated_spec(args: argparse.Namespace) -> pb.TrainSpec:
    """The spec of the options, checked for every model before any service starts."""
    spec = build_spec(args)
    for model in args.models:
        spec.model.name = model
        specs.validate(spec)
    return spec


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
    args.out = Path(str(args.out).replace("{time}", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    spec = validated_spec(args)
    experiment = Experiment(args.frameworks, args.models, args.repeats, spec)
    writer = ResultsWriter(args.out, overwrite=args.overwrite)
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
            if len(clients) > 1:
                check_parity(args, spec, clients, console)
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


def cmd_suite(args: argparse.Namespace, console: Console) -> int:
    from orchestrator import suite

    return suite.run(args, console)


def cmd_friction(args: argparse.Namespace, console: Console) -> int:
    from orchestrator import friction

    return friction.run(args, console)


def check_parity(args, spec: pb.TrainSpec, clients: dict, console: Console) -> None:
    """Before training: the models compared, saved as parity.csv beside the results. Canonical
    models that differ are refused unless --allow-mismatch; library models never are."""
    results = parity.check(clients, spec, args.models)
    parity.write_csv(results, args.out)
    parity.show(results, console)
    failed = [r.model for r in results if not r.passed]
    if failed and not args.allow_mismatch:
        raise UserError(
            f"model parity fails for {', '.join(failed)} (see {args.out / parity.CSV_NAME}): "
            "the frameworks' models differ, so the results would not compare frameworks; "
            "pass --allow-mismatch to train anyway"
        )


def cmd_parity(args: argparse.Namespace, console: Console) -> int:
    spec = validated_spec(args)
    with services(args, list(FRAMEWORKS), args.out) as clients:
        results = parity.check(clients, spec, args.models, args.probe_batch_size, args.train_steps)
    path = parity.write_csv(results, args.out)
    parity.show(results, console)
    console.print(f"Saved {path}")
    return 0 if parity.passed(results) else 1


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    if not (args.dir / "runs.csv").exists():
        raise UserError(f"{args.dir} has no runs.csv: is it a results directory of `fwbench run`?")
    console.print(report.render(args.dir).read_text())
    return 0


def cmd_data_prepare(args: argparse.Namespace, console: Console) -> int:
    from orchestrator import data as datasets

    datasets.prepare(
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


ALLOW_MISMATCH_HELP = "train even when canonical models fail the parity check"


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
    run.add_argument("--repeats", type=positive_int, default=1)
    run.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    run.add_argument(
        "--out", type=Path, required=True, help="results directory; {time} becomes a UTC timestamp"
    )
    add_spec_arguments(run)
    add_launch_arguments(run)
    run.add_argument("--allow-mismatch", action="store_true", help=ALLOW_MISMATCH_HELP)
    run.set_defaults(handler=cmd_run)

    rep = sub.add_parser("report", help="render the report of a results directory again")
    rep.add_argument("dir", type=Path)
    rep.set_defaults(handler=cmd_report)

    data = sub.add_parser("data", help="prepare datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prep = data_sub.add_parser(
        "prepare", help="decode a dataset once into the directory both services read"
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
    prep.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")
    prep.add_argument(
        "--train-count", type=int, default=SYNTHETIC_TRAIN, help="synthetic: train images"
    )
    prep.add_argument(
        "--test-count", type=int, default=SYNTHETIC_TEST, help="synthetic: test images"
    )
    prep.add_argument("--force", action="store_true", help="replace an existing --out")
    prep.set_defaults(handler=cmd_data_prepare)

    suite = sub.add_parser("suite", help="run an experiment written down as data (suites/*.yaml)")
    suite.add_argument("file", type=Path, help="a suite file, e.g. suites/seed.yaml")
    suite.add_argument("--frameworks", type=_csv_choice(FRAMEWORKS, "framework"))
    suite.add_argument("--models", type=_csv_choice(specs.MODELS, "model"))
    suite.add_argument("--repeats", type=positive_int)
    suite.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    suite.add_argument("--out", type=Path, help="results directory (default results/<name>)")
    add_spec_arguments(suite)
    add_launch_arguments(suite)
    suite.add_argument("--allow-mismatch", action="store_true", help=ALLOW_MISMATCH_HELP)
    # Spec options override the file only when given: None marks "not given".
    from orchestrator.suite import spec_defaults

    suite.set_defaults(**dict.fromkeys(spec_defaults(), None), handler=cmd_suite)

    friction = sub.add_parser(
        "friction", help="measure what installing and starting each framework costs"
    )
    friction.add_argument(
        "--frameworks", type=_csv_choice(FRAMEWORKS, "framework"), default=list(FRAMEWORKS)
    )
    friction.add_argument(
        "--mode",
        choices=("venv", "docker"),
        default="venv",
        help="venv: fresh virtualenvs in a temporary directory; docker: docker compose build",
    )
    friction.add_argument(
        "--models",
        type=_csv_choice(specs.MODELS, "model"),
        default=list(specs.MODELS),
        help="models whose time to first training step is measured",
    )
    friction.add_argument(
        "--no-shared", action="store_true", help="skip the shared-environment probe"
    )
    friction.add_argument("--out", type=Path, default=Path("results/friction"))
    friction.set_defaults(handler=cmd_friction)

    par = sub.add_parser("parity", help="check that every framework builds the same models")
    par.add_argument(
        "--models", type=_csv_choice(specs.MODELS, "model"), default=list(specs.MODELS)
    )
    par.add_argument("--out", type=Path, default=Path("results/parity"), help="for parity.csv")
    par.add_argument("--probe-batch-size", type=int, default=8, help="images whose logits compare")
    par.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="also take N training steps on the probe batch and compare their losses (after "
        "an update, MobileNet v1's differ by ~1e-3 from fp32 rounding alone)",
    )
    add_spec_arguments(par)
    add_launch_arguments(par)
    par.set_defaults(handler=cmd_parity)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    # soft_wrap: in logs and pipes (no terminal) long lines stay whole instead of breaking at 80.
    console = Console(stderr=False, highlight=False, soft_wrap=True)
    try:
        sys.exit(args.handler(args, console))
    except (UserError, ResultsExist, specs.SpecError, launchers.LauncherError) as e:
        console.print(f"[red]fwbench {args.command}: {e}[/red]")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: results written so far are kept")
        sys.exit(130)
