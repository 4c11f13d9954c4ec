"""`fwbench debug-probe`: how each framework reacts to the same mistakes, as a table.

Every framework's service injects the probes of services/common/injection.py into the same small job
(DebugProbe) and streams one ProbeResult per probe x execution mode. Each is a row of debug.csv,
appended as it arrives; its columns are ProbeResult's fields (schema.PROBE_FIELDS: a field added to
the proto is a column without an edit here).
The report's section shows the outcomes side by side, the price of eager execution, and every
error message verbatim.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import pandas as pd

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.inputs import options
from orchestrator.results import schema
from orchestrator.running.client import TrainerClient
from services.common import frameworks, injection
from services.common import spec as specs

# The small job every probe breaks, where the person running it did not say otherwise: a few
# steps show every probe's effect, and the first step's tracing dominates them.
JOB_DEFAULTS = {
    "model": "mobilenet_v2",
    "epochs": 1,
    "batch_size": 8,
    "train_limit": 32,
    "test_limit": 16,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """What `fwbench debug-probe` (and a suite's debug_probe key) accepts besides --out and the
    launch options: which frameworks, probes and modes, and the small job's spec."""
    options.add_list_argument(parser, "--frameworks", frameworks.NAMES, list(frameworks.NAMES))
    parser.add_argument(
        "--probes",
        type=options.csv_choice(injection.NAMES, "probe"),
        default=list(injection.NAMES),
        help=f"comma-separated, out of {','.join(injection.NAMES)} (default: all)",
    )
    parser.add_argument(
        "--modes",
        type=options.csv_choice(injection.EXECUTIONS, "mode"),
        default=list(injection.EXECUTIONS),
        help="execution modes, comma-separated: graph (what users run: Keras fit's tf.function, "
        "jax.jit, PyTorch eager) and eager (run_eagerly, jax.disable_jit()) (default: both)",
    )
    parser.add_argument(
        "--model",
        choices=specs.MODELS,
        default=JOB_DEFAULTS["model"],
        help="the small job's model (default: %(default)s)",
    )
    options.add_spec_arguments(parser, {k: v for k, v in JOB_DEFAULTS.items() if k != "model"})


class DebugWriter:
    """debug.csv in out_dir, one row appended (and flushed) per result as it arrives."""

    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / schema.DEBUG_CSV
        self.path.unlink(missing_ok=True)
        self.rows: list[dict] = []

    def add(self, result: pb.ProbeResult) -> dict:
        row = schema.row(result, schema.PROBE_FIELDS)
        pd.DataFrame([row], columns=list(schema.DEBUG_COLUMNS)).to_csv(
            self.path, mode="a", header=not self.rows, index=False
        )
        self.rows.append(row)
        return row


def probe(
    clients: dict[str, TrainerClient],
    spec: pb.TrainSpec,
    probe_names: list[str],
    executions: list[str],
    writer: DebugWriter,
    on_row=lambda row: None,
) -> dict[str, str]:
    """Runs the probes on every framework's service, one framework after another (never two at
    once: their timings would skew each other). Returns the frameworks whose call failed, with
    the gRPC error; their rows received so far are kept."""
    failed = {}
    for framework, client in clients.items():
        try:
            for result in client.debug_probe(spec, probe_names, executions):
                on_row(writer.add(result))
        except grpc.RpcError as e:
            failed[framework] = f"{e.code().name}: {e.details()}"
    return failed
