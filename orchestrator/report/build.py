"""The report of one result set as a Document: verdict first, evidence below, provenance last."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from orchestrator.report import charts, phases, provenance, regime, stats
from orchestrator.report.analysis import (
    METRICS,
    ModelAnalysis,
    accuracy_phrase,
    analyse,
    format_value,
    name,
    ratio_bounds,
)
from orchestrator.report.document import Block, Document, table
from orchestrator.report.resultset import ResultSet
from orchestrator.results import schema
from services.common import numerics, schedule, steady

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "results.md"
NOT_RECORDED = "not recorded"


# Beside the settings wherever a JAX run of the default mode is reported: its step time is real,
# and this is why it is what it is.
JAX_DEFAULT_STEP = (
    "JAX, default mode: each step is one call of `nnx.jit` over the model and optimizer objects, "
    "as Flax's guides write it. On every call `nnx.jit` walks those objects' graph in Python "
    '(Flax\'s guide "Performance considerations" says so; about 420 arrays for these models), a '
    "host cost per step that neither the batch nor the GPU changes. The step time is what this "
    "code costs its users; where the GPU is fast, most of it is that walk. Its evaluation pays "
    "the walk per test batch as well (an H200 evaluated 10,000 images in 7-12 s, PyTorch in 1.1-"
    "1.4 s). The tuned mode runs Flax's remedy: a functional loop, "
    f"{schedule.TUNED_STEPS_PER_EXECUTION} steps per dispatch, its state a flat list of arrays, "
    "and the whole test split evaluated in one call."
)


# Beside the settings wherever PyTorch's tuned mode ran on a GPU: its training step is at the floor,
# its evaluation is not, and the time between epochs and the total time include that.
PYTORCH_TUNED_EVALUATION = (
    "PyTorch, tuned mode on a GPU: the training step replays one CUDA graph (at its floor), but "
    "evaluation runs the model eagerly, one forward per test batch, and at small batches those "
    "forwards wait on kernel launches (an H100 evaluated 10,000 test images in 1.7-1.9 s where "
    "tuned JAX's one compiled call took 0.3-0.4 s). Evaluation time, the time between epochs and "
    "the total time are not at PyTorch's best; the steady-state step is."
)


def mode_notes(runs: pd.DataFrame) -> list[str]:
    """What a reader needs to read the runs of a framework's mode right, for those present."""
    modes = runs["mode"].fillna("default")
    on_gpu = runs["gpu"].fillna("none") != "none"
    notes = []
    if ((runs["framework"] == "jax") & (modes == "default")).any():
        notes.append(JAX_DEFAULT_STEP)
    if ((runs["framework"] == "pytorch") & (modes == "tuned") & on_gpu).any():
        notes.append(PYTORCH_TUNED_EVALUATION)
    return notes


def text(value: object) -> str:
    """Recorded text (errors, commands, settings) shown as written: no markdown, no HTML."""
    escaped = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]])", r"\\\1", escaped)


def knob_values(runs: pd.DataFrame, column: str) -> list[str]:
    """The distinct values a set's runs recorded for a knob (schema.KNOB_COLUMNS), as text;
    none where the knob was not recorded."""
    return sorted({str(v) for v in runs[column].dropna()})


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def _cell(summary: stats.Summary | None, unit: str) -> str:
    if summary is None:
        return "–"
    value = format_value(summary.mean, unit)
    if summary.ci_low is None:
        return value
    low = format_value(summary.ci_low, unit).rsplit(" ", 1)[0]
    high = format_value(summary.ci_high, unit).rsplit(" ", 1)[0]
    return f"{value} ({low}–{high})"


def _ratio_cells(r: stats.Ratio | None, reference: str, other: str, unit: str, better: str):
    if r is None:
        return "–", "–"
    ratio = f"{r.ratio:.2f}"
    if r.ci_low is not None:
        ratio += f" ({ratio_bounds(r.ci_low, r.ci_high)})"
    if r.detected is False:
        return ratio, "no difference detected"
    reference_better = r.ratio > 1 if better == "higher" else r.ratio < 1
    factor = r.ratio if r.ratio >= 1 else 1 / r.ratio
    word = "faster" if unit in ("s", "ms", "img/s") else "less"
    if factor == 1:
        return ratio, "equal"
    reading = f"{name(reference if reference_better else other)} {factor:.2f}× {word}"
    return ratio, reading + (" (single run)" if r.detected is None else "")


def model_block(analysis: ModelAnalysis, rs: ResultSet) -> Block:
    ref, others = analysis.reference if analysis.frameworks else None, analysis.others
    lines = []
    if not analysis.frameworks:
        lines.append("No run of this model finished, so there is nothing to compare.")
        return Block(analysis.label, "\n".join(lines), anchor=f"model-{slug(analysis.label)}")
    repeats = sorted(int(r) + 1 for r in analysis.runs[ref]["repeat"])
    trimming = (
        "; each metric drops its lowest and highest value on every side alike (MLPerf)"
        if analysis.n >= stats.TRIM_FROM
        else ""
    )
    lines.append(
        f"n = {analysis.n} run(s) per framework (repeats {', '.join(map(str, repeats))}, counted "
        f"from 1){trimming}. Cells: mean (95 % t interval over repeats); a single run shows its "
        "value alone, its steady-state speed ratios an interval from its windows (see Method)."
    )
    headers = ["metric", *(name(f) for f in analysis.frameworks)]
    for other in others:
        headers += [f"{name(ref)} / {name(other)} (95 % CI)", "reading"]
    rows = []
    for metric in METRICS:
        summaries = analysis.summaries.get(metric.column, {})
        if not any(summaries.get(f) for f in analysis.frameworks):
            continue
        row: list[object] = [metric.label]
        row += [_cell(summaries.get(f), metric.unit) for f in analysis.frameworks]
        for other in others:
            if metric.ratio:
                r = analysis.ratios.get(metric.column, {}).get(other)
                row += list(_ratio_cells(r, ref, other, metric.unit, metric.better))
            else:
                row += ["", ""]
        rows.append(row)
    numeric = set(range(1, 1 + len(analysis.frameworks)))
    numeric |= {1 + len(analysis.frameworks) + 2 * i for i in range(len(others))}
    lines += ["", table(headers, rows, numeric=numeric)]
    for other in others:
        lines += [
            "",
            f"Accuracy, {name(ref)} − {name(other)}: "
            + accuracy_phrase(
                _mean(analysis, ref),
                _mean(analysis, other),
                analysis.accuracy.get(other),
                (name(ref), name(other)),
            )
            + ".",
        ]
    lines += ["", *phase_lines(analysis)]
    if analysis.target_accuracy is not None:
        whose = (
            "the lower of the frameworks' best"
            if analysis.others
            else f"{name(ref)}'s best: one framework, so its own"
        )
        lines += [
            "",
            f"Time to target: the target is {analysis.target_accuracy * 100:.1f} % test accuracy "
            f"({whose}, median over repeats), timed from worker start to the end of the first "
            "epoch that reached it.",
        ]
    return Block(
        analysis.label,
        "\n".join(lines),
        charts.for_model(analysis, rs.epochs, rs.telemetry),
        anchor=f"model-{slug(analysis.label)}",
    )


# The phases table's figures: column, heading, unit (as format_value prints it).
PHASE_FIGURES = (
    ("duration_s", "time per run", "s"),
    ("images", "images", "images"),
    ("gpu_util_pct", "GPU busy", "%"),
    ("power_w", "GPU power", "W"),
    ("energy_j", "GPU energy", "kJ"),
    ("energy_per_1000_images_j", "per 1,000 images", "J"),
    ("cpu_pct", "worker CPU (100 = one core)", "%"),
)


def phase_lines(analysis: ModelAnalysis) -> list[str]:
    """The Phases paragraph and table: where the compared runs' time and energy went."""
    heading = "**Phases.** " + steady.DEFINITION
    figures = analysis.timeline.figures if analysis.timeline else None
    if figures is None or figures.empty:
        return [
            heading + " Not recorded for these runs (events.jsonl holds none of their progress "
            "events), so there is no steady-state GPU figure."
        ]
    shown = [
        (column, title, unit)
        for column, title, unit in PHASE_FIGURES
        if figures[column].notna().any()
    ]
    rows = []
    for phase in phases.PHASES:
        for framework in analysis.frameworks:
            run_ids = set(analysis.runs[framework].run_id)
            own = figures[(figures.phase == phase) & figures.run_id.isin(run_ids)]
            if own.empty:
                continue
            row: list[object] = [phases.LABELS[phase], name(framework), len(own)]
            for column, _, unit in shown:
                value = own[column].median()
                if pd.isna(value):
                    row.append("–")
                elif unit == "images":
                    row.append(f"{value:,.0f}")
                else:
                    row.append(format_value(float(value), unit))
            rows.append(row)
    return [
        heading
        + " Cells are medians over the runs compared that had the phase: its time and images per "
        "run; GPU busy, power and worker CPU, the means of the telemetry samples taken in it, by "
        "time; its energy, that power over its time.",
        "",
        table(
            ["phase", "framework", "runs", *(title for _, title, _ in shown)],
            rows,
            numeric=set(range(2, 3 + len(shown))),
        ),
    ]


def _mean(analysis: ModelAnalysis, framework: str) -> float | None:
    summary = analysis.summaries.get("final_test_accuracy", {}).get(framework)
    return summary.mean if summary else None


def statistics_block(analyses: list[ModelAnalysis]) -> Block:
    rows = []
    for analysis in analyses:
        for metric in METRICS:
            for framework in analysis.frameworks:
                s = analysis.summaries.get(metric.column, {}).get(framework)
                if s is None:
                    continue
                unit = metric.unit
                ci = "–"
                if s.ci_low is not None:
                    low = format_value(s.ci_low, unit)
                    ci = f"{low.rsplit(' ', 1)[0]}–{format_value(s.ci_high, unit)}"
                cov = f"{s.cov * 100:.1f} %" if s.cov is not None else "–"
                rows.append(
                    [
                        analysis.label,
                        metric.label,
                        name(framework),
                        s.n,
                        format_value(s.median, unit),
                        format_value(s.mean, unit),
                        ci,
                        cov,
                    ]
                )
    markdown = (
        "Every metric per model and framework over the repeats compared (after trimming). "
        "CI: Student's t interval of the mean, within the values the metric can take (no time "
        "below 0, no accuracy above 100 %); CoV: standard deviation / mean. A single run has "
        "neither.\n\n"
        + table(
            ["model", "metric", "framework", "n", "median", "mean", "95 % CI", "CoV"],
            rows,
            numeric={3, 4, 5, 6, 7},
        )
    )
    return Block("Statistics", markdown, anchor="statistics")


def epochs_block(rs: ResultSet, analyses: list[ModelAnalysis]) -> Block | None:
    if rs.epochs.empty:
        return None
    compared = {run_id for a in analyses for r in a.runs.values() for run_id in r.run_id}
    epochs = rs.epochs[rs.epochs.run_id.isin(compared)]
    if epochs.empty:
        return None
    frameworks = [f for f in rs.frameworks if f in set(epochs.framework)]
    columns = [
        ("test_accuracy", "test accuracy", "acc"),
        ("test_loss", "test loss", ""),
        ("epoch_time_s", "epoch time", "s"),
    ]
    headers = ["model", "epoch"] + [
        f"{label}, {name(f)}" for _, label, _ in columns for f in frameworks
    ]
    rows = []
    for (model, epoch), group in epochs.groupby(["model", "epoch"], sort=False):
        row: list[object] = [model, int(epoch)]
        for column, _, unit in columns:
            for framework in frameworks:
                values = group[group.framework == framework][column].dropna()
                if values.empty:
                    row.append("–")
                elif unit:
                    row.append(format_value(float(values.mean()), unit))
                else:
                    row.append(f"{values.mean():.3f}")
        rows.append(row)
    markdown = (
        "Means over the repeats compared. Epoch 0 is the model before training (the baseline); "
        "epoch N, after N epochs of training.\n\n"
        + table(headers, rows, numeric=set(range(1, len(headers))))
    )
    return Block("Per epoch", markdown, anchor="per-epoch")


def unfinished_block(rs: ResultSet) -> Block | None:
    failed = rs.runs[rs.runs.status != "ok"]
    if failed.empty:
        return None
    rows = [
        [r.run_id, name(r.framework), r.model, int(r.repeat) + 1, r.status, text(r.error) or "–"]
        for r in failed.itertuples()
    ]
    markdown = "These runs are not in any statistic. Repeats count from 1.\n\n" + table(
        ["run", "framework", "model", "repeat", "status", "error"], rows, numeric={3}
    )
    return Block("Runs that did not finish", markdown, anchor="unfinished")


def _gib(value) -> str:
    return format_value(float(value), "GiB") if value else NOT_RECORDED


def header(rs: ResultSet) -> list[str]:
    context = rs.context
    fw = context.get("fwbench") or {}
    version = f"fwbench {provenance.describe(fw)}" if fw else f"fwbench version {NOT_RECORDED}"
    host = context.get("host") or {}
    gpus = host.get("gpus") or []
    if gpus:
        names = pd.Series([g.get("name", "?") for g in gpus]).value_counts()
        gpu = " + ".join(f"{n} × {g}" for g, n in names.items())
        gpu += f", driver {host.get('driver') or NOT_RECORDED}"
    elif host:
        gpu = "no GPU"
    else:
        gpu = f"GPU {NOT_RECORDED}"
    used = ", ".join(sorted({str(g) for g in rs.runs["gpu"].dropna()})) or NOT_RECORDED
    host_line = (
        f"{text(host.get('cpu_model') or 'CPU ' + NOT_RECORDED)}, "
        f"{host.get('cores') or '?'} cores, "
        f"{_gib(host.get('memory_bytes'))} RAM · {gpu} · GPU used by the runs: {text(used)}"
        if host
        else f"host {NOT_RECORDED} · GPU used by the runs: {text(used)}"
    )
    runs = rs.runs
    first = runs.iloc[0]
    versions = " · ".join(
        f"{name(f)} {text(runs[runs.framework == f]['framework_version'].dropna().iloc[0])}"
        if runs[runs.framework == f]["framework_version"].notna().any()
        else name(f)
        for f in rs.frameworks
    )
    repeats = context.get("repeats") or int(runs["repeat"].max()) + 1
    data = (
        f"{text(first['dataset'])}, {_count(first['train_samples'])} training / "
        f"{_count(first['test_samples'])} test images · {_count(first['epochs'])} epochs · "
        f"batch {_count(first['batch_size'])} · {repeats} repeat(s)"
    )
    command = context.get("command")
    return [
        f"**Run started** {text(context.get('utc_start') or NOT_RECORDED)} · {text(version)}",
        f"**Command** `{command}`"
        if command and "`" not in command
        else f"**Command** {text(command or NOT_RECORDED)}",
        f"**Host** {host_line}",
        f"**Frameworks** {versions}",
        f"**Data** {data}",
    ]


def _count(value) -> str:
    return f"{int(value):,}" if pd.notna(value) else "?"


def provenance_block(rs: ResultSet) -> Block:
    context, runs = rs.context, rs.runs
    frameworks = rs.frameworks
    services = context.get("services") or {}
    cpu_only = {f: set(runs[runs.framework == f]["gpu"].dropna()) <= {"none"} for f in frameworks}
    rows = []

    def service_row(label: str, key: str, gpu_only: bool = False) -> None:
        row: list[object] = [label]
        for f in frameworks:
            value = (services.get(f) or {}).get(key)
            if gpu_only and cpu_only[f] and value:
                row.append(f"{text(value)} (not used: CPU run)")
            else:
                row.append(text(value) if value not in (None, "", []) else NOT_RECORDED)
        rows.append(row)

    service_row("framework version", "framework_version")
    service_row("Python", "python_version")
    service_row("CUDA", "cuda_version", gpu_only=True)
    service_row("cuDNN", "cudnn_version", gpu_only=True)
    libraries = sorted(
        {k for f in frameworks for k in (services.get(f) or {}).get("library_versions", {})}
    )
    for library in libraries:
        rows.append(
            [library]
            + [
                text((services.get(f) or {}).get("library_versions", {}).get(library, "–"))
                for f in frameworks
            ]
        )
    rows.append(
        ["devices"]
        + [
            text(", ".join((services.get(f) or {}).get("devices", [])) or NOT_RECORDED)
            for f in frameworks
        ]
    )
    rows.append(
        ["device used"]
        + [
            text(
                ", ".join(sorted(map(str, set(runs[runs.framework == f]["device_name"].dropna()))))
                or NOT_RECORDED
            )
            for f in frameworks
        ]
    )
    parts = [
        "Each framework as its service described itself (context.json) and as its runs reported "
        "(runs.csv).",
        "",
        table(["", *(name(f) for f in frameworks)], rows, numeric=set()),
    ]
    settings = _settings_by_framework(rs)
    if settings:
        keys = sorted({k for s in settings.values() for k in s})
        differ, agree = [], []
        for key in keys:
            values = [settings.get(f, {}).get(key) for f in frameworks]
            row = [text(key)] + [text(v) if v is not None else "–" for v in values]
            (agree if len(set(values)) == 1 else differ).append(row)
        heads = ["setting", *(name(f) for f in frameworks)]
        if len(frameworks) == 1:
            # One framework: nothing can differ between frameworks.
            parts += ["", f"### Settings ({name(frameworks[0])}, the one framework)", ""]
            parts.append(table(heads, agree, numeric=set()))
        else:
            parts += ["", "### Settings that differ between frameworks", ""]
            parts.append(
                table(heads, differ, numeric=set())
                if differ
                else "None: every recorded setting is equal."
            )
        if agree and len(frameworks) > 1:
            parts += [
                "",
                "### Settings equal in every framework",
                "",
                table(heads, agree, numeric=set()),
            ]
    else:
        parts += [
            "",
            f"Resolved settings (threads, XLA, TF32, cuDNN autotune): {NOT_RECORDED} "
            "(events.jsonl is absent).",
        ]
    notes = mode_notes(runs)
    if notes:
        parts += ["", "### Notes on the modes", "", *(f"- {note}" for note in notes)]
    spec_rows = []
    for column in schema.KNOB_COLUMNS:
        asked = ", ".join(knob_values(runs, column))
        resolved = _resolved(settings, column, asked)
        if asked or resolved:
            spec_rows.append([column, text(asked or "(unset)"), text(resolved or "as asked")])
    parts += [
        "",
        "### The job (runs.csv)",
        "",
        "Each knob as the spec asked for it and, where a service resolved it otherwise (the mode "
        "turns some on, a framework cannot honour others), as it ran (RunStarted.settings, the "
        "settings tables above).",
        "",
        table(["knob", "asked", "as run"], spec_rows, numeric=set()),
    ]
    parts += ["", "### Dataset", "", *dataset_lines(runs)]
    if host := provenance.host_lines(context):
        parts += ["", "### Host", "", *host]
    return Block("Provenance", "\n".join(parts), anchor="provenance")


def _resolved(settings: dict[str, dict[str, str]], column: str, asked: str) -> str:
    """How each framework's service resolved the knob `column`, where a setting of that name
    says otherwise than `asked` (compared without case: the spec's False is the setting's
    false); empty where every service ran it as asked or recorded no such setting."""
    ran = {f: own[column] for f, own in settings.items() if column in own}
    if all(value.lower() == asked.lower() for value in ran.values()):
        return ""
    return ", ".join(f"{name(f)} {value}" for f, value in ran.items())


def dataset_lines(runs: pd.DataFrame) -> list[str]:
    """Name, sizes and checksums of each dataset used; checksums come from the prepared
    directory's meta.json when it can be found from here (the services verified them)."""
    lines = []
    for dataset, group in runs.groupby(runs["dataset"].astype(str), sort=False):
        counts = (
            f"{_count(group['train_samples'].max())} training / "
            f"{_count(group['test_samples'].max())} test images used"
        )
        if dataset == "synthetic":
            lines.append(
                f"- **synthetic**, {counts}: seeded, learnable, generated in memory; speeds are "
                "real, accuracies say nothing about real images."
            )
            continue
        meta_path = next(
            (
                d / "meta.json"
                for d in (Path(dataset), ROOT / dataset)
                if (d / "meta.json").exists()
            ),
            None,
        )
        if meta_path is None:
            lines.append(
                f"- {text(dataset)}, {counts}; checksums {NOT_RECORDED} here (no meta.json found "
                "at that path on this machine; the services checked them before training)."
            )
            continue
        meta = json.loads(meta_path.read_text())
        sums = ", ".join(
            f"{text(name)} `{entry.get('sha256', '?')[:16]}…`"
            for name, entry in sorted(meta.get("arrays", {}).items())
        )
        source = (meta.get("provenance") or {}).get("source") or {}
        origin = f"; source sha256 `{source['sha256'][:16]}…`" if source.get("sha256") else ""
        lines.append(
            f"- {text(meta.get('name', dataset))} ({text(dataset)}), {counts} of "
            f"{_count(meta.get('train_count'))} / {_count(meta.get('test_count'))}; "
            f"sha256 {sums or NOT_RECORDED}{origin}."
        )
    return lines


def _settings_by_framework(rs: ResultSet) -> dict[str, dict[str, str]]:
    """Each framework's settings, from its first recorded run: they are fixed by the framework
    and the spec, so one run speaks for all."""
    out = {}
    for run in rs.runs.sort_values("repeat").itertuples():
        if run.framework not in out and run.run_id in rs.settings:
            out[run.framework] = rs.settings[run.run_id]
    return out


def method_block(out_dir: Path) -> Block:
    link = provenance.source_link(DOCS, out_dir) if DOCS.exists() else None
    dictionary = f"[docs/results.md]({link})" if link else "docs/results.md in fwbench"
    markdown = f"""\
- **Throughputs, never mixed.** Steady-state images/s = batch size / median step time (after
  warm-up). End-to-end images/s = training images × epochs / total time, from worker start
  (import, data, build and the first step with its tracing or compilation included).
- **Repeats.** Frameworks are compared on equal sets: only repeats that finished in every
  framework count. With 5 or more, each metric drops its lowest and highest value on every side
  (MLPerf's olympic rule), so n stays equal.
- **Intervals.** A metric's 95 % interval is Student's t interval of the mean, clipped to the
  values the metric can take (no time below 0, no accuracy outside 0–100 %: with few repeats the
  t interval reaches beyond them, where the mean cannot lie). A ratio is the ratio of geometric
  means, its interval Welch's t interval on log values, exponentiated. An accuracy difference of
  single runs scored on the same test images is paired, image by image (RunEnd.test_correct):
  McNemar's exact test on the images only one of them got right, and Bonett and Price's adjusted
  Wald interval for paired proportions; where a run lacks its per-image results, Newcombe's
  hybrid score interval (two Wilson intervals) on the test-set size, treating the two runs as
  independent samples; over repeats, Welch's t interval of the difference of mean accuracies,
  clipped to −100..100 points. "No difference detected" means the interval holds 1 (ratios) or
  0 (differences).
- **Speed ratios of single runs.** With one run per framework, the steady-state throughput and
  step-time ratios take their interval from the runs' steady-state windows (the journal's
  progress events, as steady state is defined below) by batch means: each run's windows, in
  order, are cut into up to {stats.WINDOW_BATCHES} batches of consecutive windows (at least
  {stats.MIN_BATCHES} of {stats.MIN_BATCH_WINDOWS} or more windows, else no interval), the
  statistic (median step, 90th percentile, throughput) is taken per batch, and Welch's t interval
  of the log batch values' standard error is set about the log of the runs' ratio. Consecutive
  windows in a batch absorb their autocorrelation. This interval is within-run noise only; from
  two repeats on, the repeats' values are the units (above), which includes run-to-run
  variation.
- **Break-even.** Claimed only where the steady-state throughput ratio's interval excludes 1: a
  job's time is its time to first step (the first step's tracing or compilation included) plus,
  per training image, its steady-state time and its share of the epoch's between-epoch overhead
  (evaluation left out); otherwise the report says no break-even can be claimed, and why.
- **Steady state.** {steady.DEFINITION} GPU busy, power and energy per image are given for
  steady state, and per phase (first step, warm-up, evaluation, between epochs, stalled windows)
  under each model's Phases; "whole run" figures span the sampler's whole run.
- **GPU busy** is NVML's utilisation: the share of time at least one kernel ran, not how much of
  the chip it used (SM activity, where recorded, says that).
- **Regime.** Device-bound: the step within {regime.NEAR_FLOOR:g}× its own framework's floor
  (floor.csv), or the GPU busy {regime.BUSY_DEVICE_PCT:g} % or more in steady state;
  host-bound: the step further from its floor with the GPU less busy, or, with no floor, the
  GPU busy under {regime.BUSY_HOST_PCT:g} % in steady state; otherwise, or with neither
  measured, the regime is unknown and said so.
- **Counting.** Epochs and repeats count from 1 in this report and from 0 in the CSV files.
  Every column is described in {dictionary}.
"""
    return Block("Method", markdown, anchor="method")


def numerics_warnings(rs: ResultSet) -> list[str]:
    """Per mode, where the frameworks' runs resolved their precision to different float32
    arithmetic (native: each framework as it ships), what each did, side by side."""
    out = []
    runs = rs.runs.assign(mode=rs.runs["mode"].fillna("default"))
    for mode, group in runs.groupby("mode", sort=False):
        differ = []
        for column, meaning in numerics.TF32_KEYS.items():
            values = {f: knob_values(group[group.framework == f], column) for f in rs.frameworks}
            recorded = {f: "/".join(v) for f, v in values.items() if v}
            if len(set(recorded.values())) > 1:
                differ.append(
                    f"{meaning}: " + ", ".join(f"{name(f)} {text(v)}" for f, v in recorded.items())
                )
        if differ:
            precisions = ", ".join(knob_values(group, "precision")) or NOT_RECORDED
            out.append(
                f"Numerics differ between the frameworks (mode {text(mode)}, precision "
                f"{text(precisions)}): {'; '.join(differ)}. Their speeds and accuracies compare "
                "each framework's own float32 arithmetic; --precision fp32 (strict) or tf32 gives "
                "every framework the same (Provenance lists every recorded setting side by side)."
            )
    return out


def global_warnings(rs: ResultSet, analyses: list[ModelAnalysis]) -> list[str]:
    out = []
    if (rs.runs["dataset"].astype(str) == "synthetic").any():
        out.append(
            "Synthetic data: speeds are real, accuracies say nothing about real images "
            "(use --dataset cifar10)."
        )
    library = rs.runs[rs.runs["architecture"].astype(str) == "library"]
    for label in library["model_definitions"].dropna().astype(str).unique():
        out.append(
            f"Model definitions: {text(label)}. Each framework trained its own library's model "
            "as-is, so results compare models as well as frameworks (see Model parity)."
        )
    out += numerics_warnings(rs)
    for analysis in analyses:
        out += analysis.warnings
    out += [text(line) for line in rs.skipped]
    return out


def build(rs: ResultSet, out_dir: Path, sections: Sequence) -> Document:
    extra = [Block(s.title, s.markdown, anchor=f"extra-{slug(s.title)}") for s in sections]
    if rs.runs.empty:
        command = rs.context.get("command")
        return Document(
            title="fwbench",
            header=[f"**Command** {text(command)}"] if command else [],
            verdict=[],
            warnings=["This directory holds no training runs: only the sections below."],
            implications=[],
            blocks=[*extra, method_block(out_dir)],
        )
    analyses = analyse(rs)
    blocks = [model_block(a, rs) for a in analyses]
    blocks += extra
    blocks += [
        b
        for b in (statistics_block(analyses), epochs_block(rs, analyses), unfinished_block(rs))
        if b is not None
    ]
    blocks += [provenance_block(rs), method_block(out_dir)]
    frameworks = " vs ".join(name(f) for f in rs.frameworks)
    return Document(
        title=f"fwbench: {frameworks}",
        header=header(rs),
        verdict=[line for a in analyses for line in a.verdict],
        warnings=global_warnings(rs, analyses),
        implications=[line for a in analyses for line in a.implications],
        blocks=blocks,
    )
