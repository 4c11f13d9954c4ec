"""What the commands share: the checks made before any service starts (--out, --device,
--service, TLS files), the pool of services from the chosen launcher, and context.json."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from google.protobuf import json_format

from orchestrator.errors import UserError
from orchestrator.inputs import options
from orchestrator.report import provenance
from orchestrator.running import launchers
from orchestrator.running.client import ClientSecurity
from orchestrator.running.pool import Pool
from services.common import security

EXAMPLES = """examples:
  fwbench run --models resnet50,mobilenet_v2 --epochs 5 --out results/{time}
  fwbench run --dataset data/cifar10 --repeats 5 --device cuda --out results/gpu
  fwbench run --resume results/gpu              finish what an interrupted run left
  fwbench suite suites/seed.yaml --epochs 1 --train-limit 512
  fwbench report results/gpu --out /tmp/copy
  fwbench compare results/default results/tuned
  fwbench sweep results/batch-sweep-* --out results/batch-sweep
  fwbench parity --models resnet50,vgg19,mobilenet,mobilenet_v2
  fwbench debug-probe --frameworks jax --probes channel_order --executions graph --out results/d
  fwbench data prepare --source ../shared/datasets/cifar10-jpeg.tar.gz --out data/cifar10
"""


def results_dir(out: Path) -> Path:
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


def check_device(args: argparse.Namespace, spec) -> None:
    """A GPU asked for on a machine without one, and --gpus N (times --parallel) on a machine
    with fewer GPUs, are refused before the local services start."""
    if args.launcher != "local":
        return
    if spec.device == "cuda" and gpu_count() == 0:
        raise UserError(
            "--device cuda: this machine has no NVIDIA GPU that nvidia-smi can see; "
            "use --device cpu or auto, or run on a GPU host"
        )
    parallel = getattr(args, "parallel", 1)
    if spec.device == "cpu" or spec.gpus * parallel == 1:
        return
    count = gpu_count()
    needed = spec.gpus * parallel
    if count >= needed:
        return
    if parallel > 1:
        raise UserError(
            f"--parallel {parallel} with --gpus {spec.gpus} starts one service per framework on "
            f"each of {parallel} groups of {spec.gpus} GPUs ({needed} in all); this machine has "
            f"{count}: use --parallel {max(count // spec.gpus, 1)} or fewer, or fewer --gpus"
        )
    raise UserError(
        f"--gpus {spec.gpus}: one run trains on {spec.gpus} GPUs; this machine has {count} that "
        f"nvidia-smi can see: use --gpus {max(count, 1)} or fewer, or --device cpu to stand "
        f"{spec.gpus} CPU devices in for them (a test of the code, not of speed)"
    )


def gpu_count() -> int:
    """The NVIDIA GPUs nvidia-smi lists on this machine; 0 without one (or without a driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return len(listed.stdout.splitlines()) if listed.returncode == 0 else 0


def service_arguments(args: argparse.Namespace, wanted: list[str]) -> dict[str, list[str]]:
    """The checked --service addresses ({} for the local launcher)."""
    if args.launcher == "local":
        if args.service:
            raise UserError("--service is for --launcher remote; add --launcher remote")
        return {}
    if getattr(args, "parallel", 1) > 1:
        raise UserError("--parallel is for --launcher local; a remote pool is its --service list")
    return launchers.parse_services(args.service, wanted)


def local_gpus(args: argparse.Namespace, gpus_per_run: int = 1) -> list[str] | None:
    """The GPUs of each service for --parallel N: one service per framework on each of N groups
    of gpus_per_run GPUs (--gpus), the groups disjoint, so that runs at once never share a GPU."""
    parallel = getattr(args, "parallel", 1)
    if parallel == 1:
        return None
    count = gpu_count()
    if count < parallel * gpus_per_run:
        raise UserError(
            f"--parallel {parallel} starts one service per framework on each of {parallel} "
            f"groups of {gpus_per_run} GPU(s); this machine has {count}: use --parallel "
            f"{max(count // gpus_per_run, 1)} or fewer"
        )
    return [
        ",".join(str(g) for g in range(i * gpus_per_run, (i + 1) * gpus_per_run))
        for i in range(parallel)
    ]


def client_security(args: argparse.Namespace) -> ClientSecurity:
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
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UserError("--tls-cert and --tls-key go together: give both or neither")
    # Read as TLS will read them, so that a wrong file is named here rather than failing every
    # handshake (gRPC then says only "Failed to create security handshaker").
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if args.tls_ca is not None:
        try:
            context.load_verify_locations(cafile=args.tls_ca)
        except ssl.SSLError as e:
            raise UserError(
                f"--tls-ca (or ${options.TLS_CA_ENV}) {args.tls_ca}: holds no PEM certificate "
                f"({e.reason or e}); give the CA certificate that signed the services' certificates"
            ) from e
    if args.tls_cert is not None:
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except ssl.SSLError as e:
            raise UserError(
                f"--tls-cert {args.tls_cert} and --tls-key {args.tls_key}: not a PEM certificate "
                f"and its private key ({e.reason or e})"
            ) from e
    return ClientSecurity(args.tls_ca, args.tls_cert, args.tls_key, token)


@contextlib.contextmanager
def services(args, wanted: list[str], addresses: dict[str, list[str]], log_dir: Path, spec=None):
    """The pool of services from the chosen launcher, each described once. Local services may
    read the spec's dataset and weights file, and write its saved weights, where the person
    running fwbench chose (services read and write files only under their data roots)."""
    if args.launcher == "local":
        roots = None
        if spec is not None:
            paths = (spec.data.data_dir, spec.model.weights_file)
            roots = [Path(p).resolve().parent for p in paths if p]
            if spec.save_weights_dir:
                roots.append(Path(spec.save_weights_dir).resolve())
            roots = roots or None
        gpus_per_run = spec.gpus if spec is not None else 1
        launch = launchers.local(
            wanted, log_dir, gpus=local_gpus(args, gpus_per_run), data_roots=roots
        )
    else:
        launch = launchers.remote(addresses, client_security(args))
    with launch as launched:
        members = Pool(launched)
        try:
            yield members
        finally:
            members.close()


def context(spec, pool: Pool, **choices) -> dict:
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


ALLOW_MISMATCH_HELP = "train even when canonical models fail the parity check"


def run_like(sub, name: str, help_text: str, frameworks_default, models_default):
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.add_selection_arguments(p, frameworks_default, models_default)
    return p
