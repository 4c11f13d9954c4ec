"""Deployment results (deploy.csv, written by results/journal.py from the Deployment events) as
the report's Deployment section."""

from __future__ import annotations

import pandas as pd

from orchestrator.report.document import Section

# deploy.csv column -> the table's heading, in the table's order.
COLUMNS = {
    "framework": "framework",
    "format": "format",
    "runtime": "runtime",
    "device": "device",
    "export_s": "export s",
    "size_bytes": "size MB",
    "import_s": "import s",
    "load_s": "load s",
    "first_inference_s": "first call s",
    "batch1_p50_ms": "p50 ms @1",
    "batch1_p99_ms": "p99 ms @1",
    "batch32_p50_ms": "p50 ms @32",
    "batch32_p99_ms": "p99 ms @32",
    "max_abs_diff": "max abs Δ",
    "status": "status",
}
# What an empty status or error cell is shown as: a service other than ours may leave them unset.
NO_STATUS = "no status recorded"
NO_MESSAGE = "no message"
MEDIAN_COLUMNS = [
    c for c in COLUMNS if c not in ("framework", "format", "runtime", "device", "status")
]


def _number(value: float, column: str) -> str:
    if pd.isna(value):
        return "—"
    if column == "size_bytes":
        return f"{value / 1e6:,.1f}"
    if column == "max_abs_diff":
        return f"{value:.1e}"
    # Three significant digits: a load of 0.008 s and one of 3.76 s both keep what they mean.
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def table(deploy_csv: pd.DataFrame) -> pd.DataFrame:
    """One row per model × framework × format: the median over the runs (repeats) whose format
    ended ok, its runtime and device, and its status as `ok n/N`."""
    rows = []
    keys = ["model", "framework", "format"]
    for (model, framework, form), group in deploy_csv.groupby(keys, sort=False):
        ok = group[group["status"] == "ok"]
        measured = ok if len(ok) else group
        row = {"model": model, "framework": framework, "format": form}
        for column in ("runtime", "device"):
            known = measured[column].dropna()
            row[column] = known.iloc[0] if len(known) else "—"
        for column in MEDIAN_COLUMNS:
            row[column] = measured[column].median() if measured[column].notna().any() else None
        statuses = sorted(set(group["status"]) - {"ok"})
        row["status"] = f"ok {len(ok)}/{len(group)}" + (
            f" ({', '.join(statuses)})" if statuses else ""
        )
        rows.append(row)
    return pd.DataFrame(rows)


def section(deploy_csv: pd.DataFrame) -> Section:
    """The report's deployment section, from deploy.csv."""
    deploy_csv = deploy_csv.fillna({"status": NO_STATUS, "error": NO_MESSAGE})
    parts = [
        "After training, each framework exported the trained model the way it recommends for "
        "serving; each artifact was loaded and run in a fresh process of the framework's "
        "environment. Export and size are measured in the training worker; import (the runtime "
        "alone), load and the first call in the fresh process; latency is one call, a host array "
        "in and out, median and 99th percentile at batch 1 and 32 over the same number of timed "
        "calls for every format; max abs Δ is against the trained model's own outputs on a probe "
        "batch of 32 images (eval mode, strict fp32). Medians over the runs where the format "
        "ended ok.",
        "",
    ]
    summary = table(deploy_csv)
    for model, group in summary.groupby("model", sort=False):
        shown = group[list(COLUMNS)].copy()
        for column in MEDIAN_COLUMNS:
            shown[column] = [_number(v, column) for v in shown[column]]
        parts += [
            f"**{model}**",
            "",
            # Already formatted: numbers parsed again would lose their separators and exponents.
            shown.rename(columns=COLUMNS).to_markdown(
                index=False,
                disable_numparse=True,
                colalign=["left"] * 4 + ["right"] * len(MEDIAN_COLUMNS) + ["left"],
            ),
            "",
        ]
    failed = deploy_csv[deploy_csv["status"] != "ok"]
    if len(failed):
        parts += ["Formats that did not end ok:", ""]
        parts += [
            f"- {r.run_id} {r.format}: {r.status}: {(str(r.error).splitlines() or [NO_MESSAGE])[0]}"
            for r in failed.itertuples()
        ]
        parts.append("")
    iterations = deploy_csv[["warmup_iterations", "timed_iterations"]].drop_duplicates()
    parts.append(
        "Calls per batch size: "
        + "; ".join(
            f"{r.warmup_iterations} warm-up, {r.timed_iterations} timed"
            for r in iterations.itertuples()
        )
        + "."
    )
    return Section("Deployment", "\n".join(parts))
