"""Two result sets side by side: for every model and framework in both, the ratio B / A of each
time, throughput and energy metric with its 95 % interval, and the accuracy difference B − A."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from orchestrator.report import charts, compare_frameworks, provenance, stats
from orchestrator.report.analysis import (
    METRICS,
    ModelAnalysis,
    accuracy_phrase,
    analyse,
    name,
    ratio_bounds,
)
from orchestrator.report.build import header, method_block, text
from orchestrator.report.document import Block, Document, table
from orchestrator.report.resultset import ResultSet


def labels(a: ResultSet, b: ResultSet) -> tuple[str, str]:
    """Folder names; with the parent folder too when the names alone are equal."""
    if a.path.name != b.path.name:
        return a.path.name, b.path.name
    return f"{a.path.parent.name}/{a.path.name}", f"{b.path.parent.name}/{b.path.name}"


def _model(label: str) -> str:
    """ "resnet50 (tuned)" -> "resnet50": labels carry the mode."""
    return label.split(" (")[0]


def _pairs(a: list[ModelAnalysis], b: list[ModelAnalysis]):
    by_label = {x.label: x for x in b}
    # Two sets of different modes (default vs tuned) pair by model: that is their comparison.
    by_model = {_model(x.label): x for x in b}
    for left in a:
        right = by_label.get(left.label) or by_model.get(_model(left.label))
        if right is None:
            continue
        for framework in left.frameworks:
            if framework in right.frameworks:
                yield left.label, framework, left.runs[framework], right.runs[framework]


def _phrase(label_a: str, label_b: str, r: stats.Ratio | None) -> str:
    if r is None:
        return "steady-state not recorded"
    ci = (
        "single runs: no interval"
        if r.ci_low is None
        else f"95 % CI {r.ci_low:.2f}–{r.ci_high:.2f}"
    )
    if r.detected is False:
        return f"steady-state: no difference detected ({label_b}/{label_a} {r.ratio:.2f}×, {ci})"
    faster, factor = (label_b, r.ratio) if r.ratio >= 1 else (label_a, 1 / r.ratio)
    return f"{faster} steady-state {factor:.2f}× faster ({label_b}/{label_a} {r.ratio:.2f}, {ci})"


def _devices(runs) -> int:
    """The devices (--gpus) each run of a set's frame trained on: 1 before it was recorded."""
    return int(runs["gpus"].fillna(1).iloc[0])


def _scaling_phrase(devices_a: int, devices_b: int, r: stats.Ratio) -> str:
    ci = (
        "single runs: no interval"
        if r.ci_low is None
        else f"95 % CI {r.ci_low:.2f}–{r.ci_high:.2f}"
    )
    return f"scaling efficiency {r.ratio:.2f} from {devices_a} to {devices_b} devices ({ci})"


def _ratio_chart(points: list[tuple[str, stats.Ratio]], label_a: str, label_b: str):
    if not points:
        return None
    with matplotlib.rc_context(charts.STYLE):
        fig = charts.figure(7, 1.2 + 0.45 * len(points))
        ax = fig.subplots()
        y = np.arange(len(points))[::-1]
        for yi, (_, r) in zip(y, points, strict=True):
            xerr = None
            if r.ci_low is not None:
                xerr = [[r.ratio - r.ci_low], [r.ci_high - r.ratio]]
            ax.errorbar(r.ratio, yi, xerr=xerr, fmt="o", color=charts.COLOURS[0], capsize=5)
        ax.axvline(1, color="#888888", lw=1)
        ax.set_yticks(y, [p for p, _ in points])
        ax.set(xlabel=f"steady-state throughput, {label_b} / {label_a}")
        ax.margins(x=0.2)
        title = f"Steady-state throughput, {label_b} / {label_a}"
        svg = charts.to_svg(fig, "compare-steady-state", title)
    return charts.Chart(
        title,
        "Ratio of geometric means; whiskers are the 95 % interval (log-scale Welch t). Right of "
        f"the line: {label_b} is faster.",
        svg,
        f"Points with whiskers, one per row, of {label_b} / {label_a}: "
        + "; ".join(f"{row} {r.ratio:.2f}" for row, r in points)
        + ".",
    )


def _common_blocks(a: ResultSet, b: ResultSet, out_dir: Path) -> list[Block]:
    """What every comparison ends with: the knobs that differ, both sets' headers, the method."""
    label_a, label_b = labels(a, b)
    differing = compare_frameworks.differing_knobs(a, b)
    return [
        Block(
            "What differs between the two sets",
            table(["knob", label_a, label_b], differing, numeric=set())
            if differing
            else "Every knob recorded in runs.csv is equal: the sets differ only in where or when "
            "they ran (see the headers below).",
            anchor="differences",
        ),
        Block(f"A: {label_a}", "\n".join(f"- {line}" for line in header(a)), anchor="set-a"),
        Block(f"B: {label_b}", "\n".join(f"- {line}" for line in header(b)), anchor="set-b"),
        method_block(out_dir),
    ]


def _set_header(a: ResultSet, b: ResultSet, out_dir: Path) -> list[str]:
    """A and B by label, each a link relative to where the comparison is written: the paths
    given on the command line would be this machine's."""
    return [
        f"**{side}** [{text(label)}]({link})" if link else f"**{side}** {text(label)}"
        for side, rs, label in zip("AB", (a, b), labels(a, b), strict=True)
        for link in [provenance.relative_link(rs.path, out_dir)]
    ]


def build(a: ResultSet, b: ResultSet, out_dir: Path) -> Document:
    label_a, label_b = labels(a, b)
    if compare_frameworks.different_frameworks(a, b):
        return compare_frameworks.build(
            a, b, (label_a, label_b), _set_header(a, b, out_dir), _common_blocks(a, b, out_dir)
        )
    analyses_a, analyses_b = analyse(a), analyse(b)
    verdict, rows, accuracy, points, scaling = [], [], [], [], []
    for model, framework, runs_a, runs_b in _pairs(analyses_a, analyses_b):
        ratios = {
            m.column: stats.ratio(stats.trimmed(runs_b[m.column]), stats.trimmed(runs_a[m.column]))
            for m in METRICS
            if m.ratio
        }
        steady = ratios["steady_state_images_per_s"]
        who = f"{model}, {name(framework)}"
        verdict.append(f"{who}: {_phrase(label_a, label_b, steady)}.")
        if steady is not None:
            points.append((who, steady))
        devices_a, devices_b = _devices(runs_a), _devices(runs_b)
        if steady is not None and devices_a != devices_b:
            efficiency = stats.scaling_efficiency(steady, devices_b, devices_a)
            verdict.append(f"{who}: {_scaling_phrase(devices_a, devices_b, efficiency)}.")
            ci = (
                "–"
                if efficiency.ci_low is None
                else ratio_bounds(efficiency.ci_low, efficiency.ci_high)
            )
            scaling.append(
                [model, name(framework), devices_a, devices_b, f"{efficiency.ratio:.3f}", ci]
            )
        for m in METRICS:
            r = ratios.get(m.column)
            if r is None:
                continue
            ci = "–" if r.ci_low is None else ratio_bounds(r.ci_low, r.ci_high)
            reading = {None: "single runs", False: "no difference detected"}.get(r.detected)
            if reading is None:
                better_b = r.ratio > 1 if m.better == "higher" else r.ratio < 1
                reading = f"{label_b if better_b else label_a} better"
            rows.append(
                [
                    model,
                    name(framework),
                    m.label,
                    f"{r.ratio:.3f}",
                    ci,
                    r.n_b,  # ratio(b, a): its second side is A
                    r.n_a,
                    reading,
                ]
            )
        tests = int(runs_b["test_samples"].min()) if runs_b["test_samples"].notna().any() else None
        difference = stats.accuracy_difference(
            stats.trimmed(runs_b["final_test_accuracy"]),
            stats.trimmed(runs_a["final_test_accuracy"]),
            tests,
        )
        accuracy.append(
            f"{who}, {label_b} − {label_a}: "
            + accuracy_phrase(
                runs_b["final_test_accuracy"].mean(),
                runs_a["final_test_accuracy"].mean(),
                difference,
                (label_b, label_a),
            )
        )
    warnings = []
    if not verdict:
        warnings.append(
            f"{label_a} and {label_b} share no model and framework with a finished run: "
            "nothing to compare."
        )
    intro = (
        f"Ratios are {label_b} / {label_a} for the same model and framework: ratio of geometric "
        "means over the repeats compared (trimmed alike with 5 or more), 95 % interval from "
        "Welch's t on log values. For times, a ratio below 1 means B is faster; for "
        "throughputs, above 1."
    )
    blocks = [
        Block(
            "Ratios",
            intro
            + "\n\n"
            + table(
                [
                    "model",
                    "framework",
                    "metric",
                    f"{label_b} / {label_a}",
                    "95 % CI",
                    f"n {label_a}",
                    f"n {label_b}",
                    "reading",
                ],
                rows,
                numeric={3, 4, 5, 6},
            ),
            [c for c in [_ratio_chart(points, label_a, label_b)] if c],
            anchor="ratios",
        ),
        *(
            [
                Block(
                    "Scaling over devices",
                    "Scaling efficiency: steady-state images/s per device of B over A's; from "
                    "one device, images/s on N over N × images/s on one (1 is perfect scaling). "
                    "Its 95 % interval is the throughput ratio's, divided by the exact ratio of "
                    "the devices. Both sets train the same global batch (`batch_size`), each "
                    "device its share.\n\n"
                    + table(
                        [
                            "model",
                            "framework",
                            f"devices {label_a}",
                            f"devices {label_b}",
                            "scaling efficiency",
                            "95 % CI",
                        ],
                        scaling,
                        numeric={2, 3, 4, 5},
                    ),
                    anchor="scaling",
                )
            ]
            if scaling
            else []
        ),
        Block(
            "Accuracy",
            "\n".join(f"- {line}." for line in accuracy) or "No accuracy to compare.",
            anchor="accuracy",
        ),
        *_common_blocks(a, b, out_dir),
    ]
    return Document(
        title=f"fwbench compare: {label_a} (A) vs {label_b} (B)",
        header=_set_header(a, b, out_dir),
        verdict=verdict,
        warnings=warnings,
        implications=[],
        blocks=blocks,
    )
