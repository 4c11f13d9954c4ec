"""parity.csv (written by running/parity_check.py before training) as the report's Model parity
section."""

from __future__ import annotations

import json

import pandas as pd

from orchestrator.report.document import Section
from orchestrator.running.parity_check import COUNTS, LOGIT_TOLERANCE, diff_text


def section(parity_csv: pd.DataFrame) -> Section:
    """The report's parity section, from parity.csv."""
    columns = {
        "model": "model",
        "framework": "framework",
        "total_params": "params",
        "trainable_params": "trainable",
        "non_trainable_state": "BN state",
        "layer_count": "layers",
        "forward_flops_per_sample": "forward FLOPs/sample",
        # No pipes: they would split markdown's columns.
        "max_abs_logit_diff": "max abs Δlogits",
        "max_rel_logit_diff": "relative",
        "verdict": "parity",
    }
    shown = parity_csv[list(columns)].copy()
    for column in COUNTS:
        shown[column] = [f"{x:,}" for x in shown[column]]
    for column in ("max_abs_logit_diff", "max_rel_logit_diff"):
        shown[column] = [diff_text(None if pd.isna(x) else x) for x in shown[column]]
    shown = shown.rename(columns=columns)
    parts = [
        "Every framework's model inspected before training (fp32 on the CPU; logits of a probe "
        f"batch in eval mode). Parity: equal counts and logits within {LOGIT_TOLERANCE:.0e}, "
        "absolute and relative to the largest.",
        "",
        # Already formatted: numbers parsed again would lose their separators and exponents.
        shown.to_markdown(
            index=False,
            disable_numparse=True,
            colalign=["left", "left", *["right"] * (len(columns) - 3), "left"],
        ),
        "",
    ]
    for model, group in parity_csv.groupby("model", sort=False):
        properties = {r.framework: json.loads(r.properties) for r in group.itertuples()}
        keys = sorted({k for p in properties.values() for k in p})
        differing = [key for key in keys if len({p.get(key, "—") for p in properties.values()}) > 1]
        if differing:
            parts += [f"Differences of {model}:", ""]
            parts += [
                f"- {key}: " + " · ".join(f"{f} {p.get(key, '—')}" for f, p in properties.items())
                for key in differing
            ]
            parts.append("")
    return Section("Model parity", "\n".join(parts))
