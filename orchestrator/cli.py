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
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from google.protobuf import json_format
from rich.console import Console
from rich.text import Text

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import friction, report
from orchestrator.commands import debug_probe as debug_probes
from orchestrator.data import preparation
from orchestrator.errors import UserError
from orchestrator.inputs import options, suite_file
from orchestrator.report import debugging, provenance
from orchestrator.results import journal, schema
from orchestrator.running import launchers, parity_check
from orchestrator.running.client import ClientSecurity
from orchestrator.running.pool import Pool
from orchestrator.running.runner import Experiment, Interrupted, run_experiment
from services.common import frameworks, injection, security
from services.common import spec as specs
from services.common.datasets import SYNTHETIC_TEST, SYNTHETIC_TRAIN

EXAMPLES = """examples:
  fwbench run --models resnet50,mobilenet_v2 --epochs 5 --out results/{time}
  fwbench run --dataset data/cifar10 --repeats 5 --device cuda --out results/gpu
  fwbench run --resume results/gpu              finish what an interrupted run left
  fwbench suite suites/seed.yaml --epochs 1 --train-limit 512
  fwbench report results/gpu --out /tmp/copy
  fwbench compare results/default results/tuned
  fwbench sweep results/batch-sweep-* --out results/batch-sweep
  fwbench parity --models resnet50,vgg19,mobilenet,mobilenet_v2
  fwbench debug-probe --frameworks pytorch,jax --probes channel_order --modes graph --out results/d
  fwbench data prepare --source ../shared/datasets/cifar10-jpeg.tar.gz --out data/cifar10
"""


def version() -> str:
    """fwbench's version and the git commit it runs from ("+dirty" with local changes)."""
    facts = provenance.fwbench_facts()
    commit = (facts["git_commit"] or "")[:12] + ("+dirty" if facts["git_dirty"] else "")
    return f"{facts['version'] or 'unknown'} ({commit or 'no git commit'})"


# ---- checks made before any service starts -------------------------------------------------------


def _results_dir(out: Path) -> Path:
    """--out with {time} expanded, checked to be a directory fwbench can write."""
    out = Path(str(out).replace("{time}", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: name a directory for the results")
    existing = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    try:
        # A real write where the results would go (root passes os.access even on /proc).
        Path(tempfile.mkdtemp(prefix=".fwbench-probe-", dir=existing)).rmdir()
    except OSError as e:
        raise UserError(
            f"--out {out}: cannot write in {existing} ({e.strerror}); choose another --out"
        ) from e
    return out


def _check_device(args: argparse.Namespace, spec) -> None:
    """A GPU asked for on a machine without one is refused before the local services start."""
    if spec.device == "cuda" and args.launcher == "local":
        found = shutil.which("nvidia-smi") is not None
        if found:
            found = subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
        if not found:
            raise UserError(
                "--device cuda: this machine has no NVIDIA GPU that nvidia-smi can see; "
                "use --device cpu or auto, or run on a GPU host"
            )


def _service_arguments(args: argparse.Namespace, wanted: list[str]) -> dict[str, list[str]]:
    """The checked --service addresses ({} for the local launcher)."""
    if args.launcher == "local":
        if args.service:
            raise UserError("--service is for --launcher remote; add --launcher remote")
        return {}
    if getattr(args, "parallel", 1) > 1:
        raise UserError("--parallel is for --launcher local; a remote pool is its --service list")
    return launchers.parse_services(args.service, wanted)


def _local_gpus(args: argparse.Namespace) -> list[str] | None:
    """The GPUs for --parallel N: one service per framework on each of the first N."""
    parallel = getattr(args, "parallel", 1)
    if parallel == 1:
        return None
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    count = len(listed.stdout.splitlines()) if listed.returncode == 0 else 0
    if count < parallel:
        raise UserError(
            f"--parallel {parallel} starts one service per framework on each of {parallel} GPUs; "
            f"this machine has {count}: use --parallel {max(count, 1)} or fewer"
        )
    return [str(i) for i in range(parallel)]


def _client_security(args: argparse.Namespace) -> ClientSecurity:
    """TLS files and the token for remote services, checked readable before anything starts."""
    token = os.environ.get(security.TOKEN_ENV) or None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as e:
            raise UserError(
                f"--token-file (or ${options.TOKEN_FILE_ENV}) {args.token_file}: cannot be read "
                f"({e.strerror})"
            ) from e
    for flag, env in (
        ("tls_ca", f" (or ${options.TLS_CA_ENV})"),
        ("tls_cert", ""),
        ("tls_key", ""),
    ):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            raise UserError(f"--{flag.replace('_', '-')}{env} {path}: no such file")
    if args.tls_cert and not args.tls_ca:
        raise UserError("--tls-cert is for mutual TLS: give the services' CA with --tls-ca too")
    return ClientSecurity(args.tls_ca, args.tls_cert, args.tls_key, token)


@contextlib.contextmanager
def services(args, wanted: list[str], addresses: dict[str, list[str]], log_dir: Path, spec=None):
    """The pool of services from the chosen launcher, each described once. Local services may
    read the spec's dataset, which the person running fwbench chose (services read datasets only
    under their data roots)."""
    if args.launcher == "local":
        roots = None
        if spec is not None and spec.data.data_dir:
            roots = [Path(spec.data.data_dir).resolve().parent]
        launch = launchers.local(wanted, log_dir, gpus=_local_gpus(args), data_roots=roots)
    else:
        launch = launchers.remote(addresses, _client_security(args))
    with launch as launched:
        members = Pool(launched)
        try:
            yield members
        finally:
            members.close()


# ---- commands ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, console: Console, extra_files: dict | None = None) -> int:
    if args.resume:
        out, args, spec = args.resume, *_resumed(args)
    else:
        out = _results_dir(args.out)
        journal.check_free(out, args.overwrite)
        spec = options.validated(args, args.models)
    _check_device(args, spec)
    addresses = _service_arguments(args, args.frameworks)
    _local_gpus(args)  # refused before anything starts
    experiment = Experiment(args.frameworks, args.models, args.repeats, spec)
    interrupted = False
    with services(args, args.frameworks, addresses, out / "logs", spec) as pool:
        _check_devices_served(spec, pool)
        for member in pool.members:
            d = member.described
            console.print(
                f"{member.name}: {d.framework_version} · devices {', '.join(d.devices)} · "
                f"import {d.import_s:.1f} s",
                markup=False,
            )
        if pool.parallel():
            console.print(f"{len(pool.members)} services: runs on different GPUs go at once")
        writer = (
            journal.ResultsWriter.resume(out)
            if args.resume
            else journal.ResultsWriter(out, overwrite=args.overwrite)
        )
        try:
            for name, source in (extra_files or {}).items():
                shutil.copyfile(source, out / name)
            if not args.resume:
                writer.write_context(
                    _context(
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


def _context(spec, pool: Pool, **choices) -> dict:
    """context.json: the command, the spec, the command's own choices and the services."""
    # provenance: fwbench's version and commit, the host (CPU, memory, GPUs, driver), the UTC start.
    return provenance.collect() | {
        "command": shlex.join(["fwbench", *sys.argv[1:]]),
        "spec": json_format.MessageToDict(spec, preserving_proto_field_name=True),
        **choices,
        # Each framework's first service (the report's columns), then every member of the pool.
        "services": {
            f: json_format.MessageToDict(d, preserving_proto_field_name=True)
            for f, d in reversed([(m.framework, m.described) for m in pool.members])
        },
        "pool": [
            {"framework": m.framework, "address": m.endpoint.address, "placement": m.placement}
            for m in pool.members
        ],
    }


def _resumed(args: argparse.Namespace) -> tuple[argparse.Namespace, pb.TrainSpec]:
    """The arguments and spec of the run being resumed, from its context.json; options given now
    must not change them (a changed spec would mix two experiments in one result set)."""
    context_path = args.resume / schema.CONTEXT_JSON
    if not context_path.exists():
        raise UserError(
            f"--resume {args.resume}: no {schema.CONTEXT_JSON}; is it a results directory?"
        )
    context = json.loads(context_path.read_text())
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


def _check_devices_served(spec, pool: Pool) -> None:
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


def cmd_suite(args: argparse.Namespace, console: Console) -> int:
    run_args = suite_file.run_arguments(args)
    console.print(
        f"suite {args.file}: {', '.join(run_args.frameworks)} × {', '.join(run_args.models)} × "
        f"{run_args.repeats} repeat(s), {run_args.epochs or specs.effective_default('epochs')} "
        f"epoch(s) of {run_args.dataset or options.DEFAULT_DATASET}",
        markup=False,
    )
    # The file is kept beside the results it produced.
    code = cmd_run(run_args, console, extra_files={schema.SUITE_YAML: args.file})
    if run_args.debug_probe is None or code == 130:
        return code
    out = run_args.resume or run_args.out
    probe_args = argparse.Namespace(**vars(run_args) | vars(run_args.debug_probe))
    return max(code, run_debug_probes(probe_args, out, console))


DEBUG_DESCRIPTION = """Injects each probe, one at a time, into the same small training job in every
framework, in graph and eager execution, each in a fresh worker process, and records what the
framework does: error (with its message, whether it names the culprit, the traceback), silent
(trained to the end), or a NaN loss that only fwbench noticed. Writes DIR/debug.csv as results
arrive and DIR/report.md/html. Probes:
""" + "\n".join(f"  {p.name}: {p.description}" for p in injection.PROBES.values())


def debug_spec(args: argparse.Namespace) -> pb.TrainSpec:
    spec = options.for_model(options.build_spec(args), args.model)
    spec.run_id = "debug-probe"
    specs.validate(spec)
    return spec


def cmd_debug_probe(args: argparse.Namespace, console: Console) -> int:
    return run_debug_probes(args, _results_dir(args.out), console)


def run_debug_probes(args: argparse.Namespace, out: Path, console: Console) -> int:
    """The probes of args on every framework; debug.csv and the report in out (a suite's
    results directory keeps its context.json: the training runs' own)."""
    spec = debug_spec(args)
    _check_device(args, spec)
    addresses = _service_arguments(args, args.frameworks)
    out.mkdir(parents=True, exist_ok=True)
    writer = debug_probes.DebugWriter(out)

    def show(row: dict) -> None:
        detail = row["exception_type"] or ""
        console.print(
            f"{row['framework']} {row['probe']} ({row['execution']}): {row['outcome']} {detail}",
            markup=False,
        )

    with services(args, args.frameworks, addresses, out / "logs", spec) as pool:
        context = _context(
            spec, pool, frameworks=args.frameworks, probes=args.probes, modes=args.modes
        )
        if not (out / schema.CONTEXT_JSON).exists():
            (out / schema.CONTEXT_JSON).write_text(json.dumps(context, indent=2))
        failed = debug_probes.probe(pool.clients(), spec, args.probes, args.modes, writer, show)
    if writer.rows:
        console.print(debugging.table(debugging.read(writer.path)))
    rendered = report.render(out)
    console.print(
        f"Report: {rendered.html_path} (and {rendered.markdown_path.name}, {schema.DEBUG_CSV})"
    )
    for framework, error in failed.items():
        console.print(Text(f"{framework}: the probes stopped: {error}", style="red"))
    return 1 if failed else 0


def cmd_parity(args: argparse.Namespace, console: Console) -> int:
    spec = options.validated(args, args.models)
    addresses = _service_arguments(args, args.frameworks)
    out = _results_dir(args.out)
    with services(args, args.frameworks, addresses, out / "logs") as pool:
        checked = parity_check.check(
            pool.clients(), spec, args.models, args.probe_batch_size, args.train_steps
        )
    path = parity_check.write_csv(checked, out)
    parity_check.show(checked, console)
    console.print(f"Saved {path}")
    return 0 if parity_check.passed(checked) else 1


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    source = args.dir
    if not (source / schema.EVENTS_JSONL).exists() and not (source / schema.RUNS_CSV).exists():
        raise UserError(
            f"{source} has no {schema.EVENTS_JSONL}: is it a results directory of fwbench?"
        )
    out = args.out or source
    if out != source:
        journal.check_free(out, overwrite=False)
        out.mkdir(parents=True, exist_ok=True)
        for name in (
            schema.CONTEXT_JSON,
            schema.PARITY_CSV,
            schema.FRICTION_CSV,
            schema.SUITE_YAML,
        ):
            if (source / name).exists():
                shutil.copyfile(source / name, out / name)
    if (source / schema.EVENTS_JSONL).exists():
        journal.replay(source, out)
    rendered = report.render(out, friction_dir=args.friction)
    for line in rendered.verdict:
        console.print(line, markup=False)
    console.print(f"Report: {rendered.html_path}")
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    compared = report.compare(args.a, args.b, args.out)
    for line in compared.verdict:
        console.print(line, markup=False)
    console.print(f"Comparison: {compared.html_path} (and {compared.markdown_path.name})")
    return 0


def cmd_sweep(args: argparse.Namespace, console: Console) -> int:
    swept = report.sweep(args.dirs, args.out)
    for line in swept.verdict:
        console.print(line, markup=False)
    console.print(f"Sweep: {swept.html_path} (and {swept.markdown_path.name})")
    return 0


def cmd_data_prepare(args: argparse.Namespace, console: Console) -> int:
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


def cmd_friction(args: argparse.Namespace, console: Console) -> int:
    out = _results_dir(args.out)
    measured = friction.measure(args, console)
    out.mkdir(parents=True, exist_ok=True)
    measured.to_csv(out / schema.FRICTION_CSV, index=False)
    friction.print_table(measured, console)
    rendered = report.render(out)
    console.print(f"Friction in {out / schema.FRICTION_CSV} and {rendered.html_path}")
    return 0


# ---- the parser ----------------------------------------------------------------------------------

ALLOW_MISMATCH_HELP = "train even when canonical models fail the parity check"


def _run_like(sub, name: str, help_text: str, frameworks_default, models_default):
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.add_selection_arguments(p, frameworks_default, models_default)
    return p


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fwbench",
        description="Measure deep-learning frameworks on the same image-classification training "
        "job, side by side.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"fwbench {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    run = _run_like(
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
    run.add_argument("--allow-mismatch", action="store_true", help=ALLOW_MISMATCH_HELP)
    run.set_defaults(handler=cmd_run)

    suite_p = _run_like(
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
    suite_p.add_argument("--allow-mismatch", action="store_true", help=ALLOW_MISMATCH_HELP)
    suite_p.set_defaults(handler=cmd_suite)

    dbg = sub.add_parser(
        "debug-probe",
        help="inject the same mistakes into a small job in every framework and compare what "
        "each does: error, silence or NaN, and how helpful its message is",
        description=DEBUG_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    debug_probes.add_arguments(dbg)
    dbg.add_argument("--out", type=Path, required=True, help="for debug.csv and the report")
    options.add_launch_arguments(dbg)
    dbg.set_defaults(handler=cmd_debug_probe)

    rep = sub.add_parser("report", help="rebuild a results directory's CSVs and report")
    rep.add_argument("dir", type=Path, help="a results directory (its events.jsonl)")
    rep.add_argument(
        "--out", type=Path, help="write everything there instead of into DIR (default: DIR)"
    )
    rep.add_argument("--friction", type=Path, metavar="DIR", help="include friction.csv from DIR")
    rep.set_defaults(handler=cmd_report)

    cmp = sub.add_parser(
        "compare",
        help="ratio tables between two result sets (two versions, machines, default vs tuned)",
    )
    cmp.add_argument("a", type=Path, help="the reference result set")
    cmp.add_argument("b", type=Path, help="the result set compared with it (ratios are B / A)")
    cmp.add_argument(
        "--out", type=Path, help="where compare.md/compare.html go (default: B's directory)"
    )
    cmp.set_defaults(handler=cmd_compare)

    swp = sub.add_parser(
        "sweep",
        help="throughput and GPU utilisation against batch size, over result sets alike but for "
        "the batch size (suites/batch-sweep/)",
    )
    swp.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="one result set per batch")
    swp.add_argument(
        "--out", type=Path, required=True, help="where sweep.md/sweep.html go (created if missing)"
    )
    swp.set_defaults(handler=cmd_sweep)

    par = _run_like(
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
    par.set_defaults(handler=cmd_parity)

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
    prep.set_defaults(handler=cmd_data_prepare)

    fri = sub.add_parser(
        "friction", help="measure what installing and starting each framework costs"
    )
    options.add_list_argument(fri, "--frameworks", frameworks.NAMES, list(frameworks.NAMES))
    fri.add_argument(
        "--mode",
        choices=("venv", "docker"),
        default="venv",
        help="venv: fresh virtualenvs in a temporary directory; docker: docker compose build "
        "(default: %(default)s)",
    )
    fri.add_argument(
        "--models",
        type=options.csv_choice(specs.MODELS, "model"),
        default=list(specs.MODELS),
        help="models whose time to first training step is measured (default: all)",
    )
    fri.add_argument("--no-shared", action="store_true", help="skip the shared-environment probe")
    fri.add_argument(
        "--out", type=Path, default=Path("results/friction"), help="(default: %(default)s)"
    )
    fri.set_defaults(handler=cmd_friction)
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
