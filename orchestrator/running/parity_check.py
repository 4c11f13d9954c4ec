"""Model parity: every framework's Inspect of the same spec, compared.

Parity holds for canonical models when every count is equal and the probe logits (fp32, eval
mode, on the CPU) differ by at most LOGIT_TOLERANCE, both absolutely and relative to the largest
logit (where logits are small, as MobileNet v1's at init, the absolute bound alone would let a
real difference through). With init 'framework' the weights differ by design, so only counts are
judged. With shared weights and training steps (`--train-steps`), the steps' losses must agree
within LOSS_TOLERANCE too.
Library models are not judged: their differences are what the table reports.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from rich import box
from rich.table import Table

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.inputs.options import for_model
from orchestrator.results import schema
from orchestrator.results.journal import LIBRARY_LABEL
from orchestrator.running.client import TrainerClient

LOGIT_TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-4
COUNTS = (
    "total_params",
    "trainable_params",
    "non_trainable_state",
    "layer_count",
    "forward_flops_per_sample",
)


@dataclasses.dataclass
class ModelParity:
    """One model as every framework built it, and how far apart they are."""

    model: str
    architecture: str
    init: str
    reports: dict[str, pb.ModelReport]  # by framework, the first is the reference
    counts_equal: bool
    max_abs_logit_diff: float
    # max |Δlogits| / max |logits| of the reference.
    max_rel_logit_diff: float
    # max |Δloss| over the training steps; None without training steps.
    max_abs_loss_diff: float | None
    # property -> {framework: value}, for the properties whose values differ.
    differences: dict[str, dict[str, str]]

    @property
    def judged(self) -> bool:
        return self.architecture == "canonical"

    @property
    def same_weights(self) -> bool:
        """Whether the models start from the same weights, so that their outputs compare."""
        return self.judged and self.init in ("shared", "pretrained")

    @property
    def passed(self) -> bool:
        if not self.judged:
            return True
        if not self.counts_equal:
            return False
        if not self.same_weights:
            return True  # different weights compute different outputs by design
        logits_agree = (
            self.max_abs_logit_diff <= LOGIT_TOLERANCE
            and self.max_rel_logit_diff <= LOGIT_TOLERANCE
        )
        losses_agree = self.max_abs_loss_diff is None or self.max_abs_loss_diff <= LOSS_TOLERANCE
        return logits_agree and losses_agree

    @property
    def verdict(self) -> str:
        if not self.judged:
            return "not judged (library)"
        return "pass" if self.passed else "FAIL"


def compare(spec: pb.TrainSpec, reports: dict[str, pb.ModelReport]) -> ModelParity:
    """How far apart the reports (by framework) are; the first is the reference."""
    reference, *others = reports
    logits = {f: np.asarray(r.probe_logits, np.float64) for f, r in reports.items()}
    losses = {f: np.asarray(r.probe_train_losses, np.float64) for f, r in reports.items()}
    logit_diff = max((_max_abs_diff(logits[reference], logits[f]) for f in others), default=0.0)
    loss_diff = max((_max_abs_diff(losses[reference], losses[f]) for f in others), default=0.0)
    differences = {}
    for key in sorted({k for r in reports.values() for k in r.properties}):
        values = {f: r.properties.get(key, "—") for f, r in reports.items()}
        if len(set(values.values())) > 1:
            differences[key] = values
    scale = float(np.abs(logits[reference]).max(initial=0.0))
    return ModelParity(
        model=spec.model.name,
        architecture=spec.model.architecture,
        init=spec.model.init,
        reports=reports,
        counts_equal=all(
            getattr(reports[f], count) == getattr(reports[reference], count)
            for f in others
            for count in COUNTS
        ),
        max_abs_logit_diff=logit_diff,
        max_rel_logit_diff=logit_diff / scale if scale else logit_diff,
        max_abs_loss_diff=loss_diff if losses[reference].size else None,
        differences=differences,
    )


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    # Different shapes cannot be compared element by element: as far apart as can be.
    return float(np.abs(a - b).max()) if a.shape == b.shape and a.size else float("inf")


def check(
    clients: dict[str, TrainerClient],
    spec: pb.TrainSpec,
    models: list[str],
    probe_batch_size: int = 8,
    train_steps: int = 0,
) -> list[ModelParity]:
    """Inspects every model in every framework, one call at a time, and compares them."""
    results = []
    for model in models:
        model_spec = for_model(spec, model)
        reports = {
            framework: client.inspect(model_spec, probe_batch_size, train_steps)
            for framework, client in clients.items()
        }
        results.append(compare(model_spec, reports))
    return results


def passed(results: list[ModelParity]) -> bool:
    return all(r.passed for r in results)


def frame(results: list[ModelParity]) -> pd.DataFrame:
    """parity.csv: one row per model x framework."""
    rows = []
    for r in results:
        for framework, report in r.reports.items():
            rows.append(
                {
                    "model": r.model,
                    "framework": framework,
                    "architecture": r.architecture,
                    "init": r.init,
                    **{count: getattr(report, count) for count in COUNTS},
                    "counts_equal": r.counts_equal,
                    # Empty where the weights differ by design (library, init framework).
                    "max_abs_logit_diff": r.max_abs_logit_diff if r.same_weights else None,
                    "max_rel_logit_diff": r.max_rel_logit_diff if r.same_weights else None,
                    "max_abs_loss_diff": r.max_abs_loss_diff if r.same_weights else None,
                    "probe_train_losses": " ".join(f"{x:.6f}" for x in report.probe_train_losses),
                    "verdict": r.verdict,
                    "differences": "; ".join(
                        f"{key}: {values[framework]}" for key, values in r.differences.items()
                    ),
                    "properties": json.dumps(dict(sorted(report.properties.items()))),
                }
            )
    return pd.DataFrame(rows)


def write_csv(results: list[ModelParity], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / schema.PARITY_CSV
    frame(results).to_csv(path, index=False)
    return path


def diff_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.1e}"


def table(results: list[ModelParity]) -> Table:
    """The terminal table, narrow enough for 80 columns: counts per model and framework (all of
    them, total parameters too, are in parity.csv) and how far apart the frameworks are."""
    has_losses = any(r.max_abs_loss_diff is not None for r in results)
    t = Table(
        title="Model parity",
        caption="Δlogits: max |difference| of the probe logits (fp32, eval mode; parity.csv has it "
        "relative to the largest logit too)"
        + ("; Δloss: max |difference| of the training steps' losses" if has_losses else ""),
        # The box's blank dividers are the only space between columns: 80 columns suffice.
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,
    )
    t.add_column("model")
    t.add_column("framework")
    for column in ("trainable", "BN state", "layers", "MFLOPs", "Δlogits"):
        t.add_column(column, justify="right")
    if has_losses:
        t.add_column("Δloss", justify="right")
    t.add_column("parity")
    for r in results:
        for i, (framework, report) in enumerate(r.reports.items()):
            first = i == 0
            # Outputs of different weights differ by design: nothing to read in their distance.
            compared = first and r.same_weights
            row = [
                r.model if first else "",
                framework,
                f"{report.trainable_params:,}",
                f"{report.non_trainable_state:,}",
                str(report.layer_count),
                f"{report.forward_flops_per_sample / 1e6:,.1f}",
                diff_text(r.max_abs_logit_diff) if compared else "",
            ]
            if has_losses:
                row.append(diff_text(r.max_abs_loss_diff) if compared else "")
            verdict = {"pass": "[green]pass[/green]", "FAIL": "[red]FAIL[/red]"}.get(r.verdict, "—")
            row.append(verdict if first else "")
            t.add_row(*row, end_section=i == len(r.reports) - 1)
    return t


def differences_table(results: list[ModelParity]) -> Table | None:
    """Properties whose values differ between frameworks, per model; None when none do."""
    frameworks = list(results[0].reports) if results else []
    t = Table(
        title="Differences between the frameworks' models",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    t.add_column("model", no_wrap=True)
    t.add_column("property", no_wrap=True)
    for framework in frameworks:
        t.add_column(framework, ratio=1, overflow="fold")
    for r in results:
        for i, (key, values) in enumerate(r.differences.items()):
            t.add_row(
                r.model if i == 0 else "",
                key,
                *(values[f] for f in frameworks),
                end_section=i == len(r.differences) - 1,
            )
    return t if t.row_count else None


def show(results: list[ModelParity], console) -> None:
    console.print(table(results))
    differences = differences_table(results)
    if differences is not None:
        console.print(differences)
    if any(not r.judged for r in results):
        console.print(f"{LIBRARY_LABEL}: their differences are listed, parity is not required.")
