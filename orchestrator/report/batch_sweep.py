"""A batch-size sweep: result sets alike but for the batch size, read together — steady-state
throughput and GPU utilisation against batch size for every model and framework, and the batch
from which a larger one stops paying, i.e. where the host stops being the limit.

At a small batch a step's host work (Python, kernel launches) outlasts the device's work, so the
step time hardly changes with the batch and throughput grows in proportion to it; once the device
is the limit, the step time grows with the batch and throughput stays flat. The gain of a step
from batch b to batch b' is log(throughput'/throughput) / log(b'/b): 1 when throughput grows as
fast as the batch (host-bound), 0 when it does not grow (device-bound).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pandas as pd

from orchestrator.report import charts, phases
from orchestrator.report.analysis import format_value, name, per_run
from orchestrator.report.build import header, knob_values, method_block, text
from orchestrator.report.document import Block, Document, table
from orchestrator.report.resultset import ResultSet, ResultSetError
from orchestrator.results import schema

# Below this gain, doubling the batch adds under 2**0.15 - 1 = 11 % throughput: the device, not
# the host, is the limit from that batch on.
SATURATED_GAIN = 0.15


def check_alike(sets: list[ResultSet]) -> None:
    """Refuses sets that differ in anything but the batch size, or repeat a batch size."""
    if len(sets) < 2:
        raise ResultSetError(
            "a sweep needs two or more result sets of different batch sizes; give the "
            "directories the batch-sweep suites wrote (results/batch-sweep-*)"
        )
    seen: dict[int, Path] = {}
    for rs in sets:
        batches = sorted({int(b) for b in rs.runs["batch_size"].dropna()})
        if len(batches) != 1:
            raise ResultSetError(
                f"{rs.path} holds batch sizes {batches}: a sweep reads one batch size per "
                "result set"
            )
        if batches[0] in seen:
            raise ResultSetError(
                f"{seen[batches[0]]} and {rs.path} both hold batch {batches[0]}: give one "
                "result set per batch size"
            )
        seen[batches[0]] = rs.path
    reference = sets[0]
    for rs in sets[1:]:
        for column in schema.KNOB_COLUMNS:
            if column == "batch_size":
                continue
            ours, theirs = knob_values(reference.runs, column), knob_values(rs.runs, column)
            if ours != theirs:
                raise ResultSetError(
                    f"{reference.path} and {rs.path} differ in {column} ({', '.join(ours) or '–'} "
                    f"vs {', '.join(theirs) or '–'}), not only in the batch size: their "
                    "throughputs would not be one sweep"
                )


def points(sets: list[ResultSet]) -> pd.DataFrame:
    """One row per (model, mode, framework, batch size): the means over the finished runs (GPU
    busy: in steady state, over the runs that recorded it)."""
    rows = []
    for rs in sets:
        runs = per_run(rs, phases.of(rs))
        runs = runs[runs["status"] == "ok"]
        if runs.empty:
            continue
        for (model, mode, framework), group in runs.groupby(
            ["model", "mode", "framework"], sort=False
        ):
            rows.append(
                {
                    "model": model,
                    "mode": mode,
                    "framework": framework,
                    "batch_size": int(group["batch_size"].iloc[0]),
                    "runs": len(group),
                    "images_per_s": group["steady_state_images_per_s"].mean(),
                    "step_time_median_s": group["step_time_median_s"].mean(),
                    "steady_gpu_util_pct": group["steady_gpu_util_pct"].mean(),
                    "device_name": str(group["device_name"].iloc[0]),
                }
            )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values(["model", "mode", "framework", "batch_size"], kind="stable")
    by = frame.groupby(["model", "mode", "framework"], sort=False)
    frame["gain"] = [
        _gain(b0, b1, t0, t1)
        for b0, b1, t0, t1 in zip(
            by["batch_size"].shift(1),
            frame["batch_size"],
            by["images_per_s"].shift(1),
            frame["images_per_s"],
            strict=True,
        )
    ]
    return frame.reset_index(drop=True)


def _gain(b0, b1, t0, t1) -> float:
    if pd.isna(b0) or not (t0 > 0 and t1 > 0):
        return float("nan")
    return math.log(t1 / t0) / math.log(b1 / b0)


def saturation_batch(line: pd.DataFrame) -> int | None:
    """The smallest batch from which every larger one gains less than SATURATED_GAIN; None when
    throughput still grows at the largest batch measured."""
    gains = list(line["gain"])
    batches = list(line["batch_size"])
    for i in range(1, len(batches)):
        if all(g < SATURATED_GAIN for g in gains[i:]):
            return batches[i - 1]
    return None


def _sentence(model: str, mode: str, framework: str, line: pd.DataFrame) -> str:
    first, last = line.iloc[0], line.iloc[-1]
    who = f"{model} ({mode}), {name(framework)}"
    growth = last["images_per_s"] / first["images_per_s"]
    span = (
        f"{format_value(first['images_per_s'], 'img/s')} at batch {first['batch_size']} → "
        f"{format_value(last['images_per_s'], 'img/s')} at {last['batch_size']} ({growth:.2f}×)"
    )
    knee = saturation_batch(line)
    if knee is None:
        reading = (
            f"throughput still grows at batch {last['batch_size']}: the host limits every batch "
            "measured"
        )
    elif knee == first["batch_size"]:
        reading = f"already at batch {knee} a larger batch adds under 11 %: the device limits"
    else:
        reading = (
            f"from batch {knee} on, a larger batch adds under 11 %: the host stops being the limit"
        )
    util = line["steady_gpu_util_pct"]
    busy = (
        f"; GPU busy in steady state {format_value(util.iloc[0], '%')} → "
        f"{format_value(util.iloc[-1], '%')}"
        if util.notna().all()
        else ""
    )
    return f"{who}: {span}{busy}; {reading}."


def _chart(model: str, mode: str, lines: pd.DataFrame, frameworks: list[str]) -> charts.Chart:
    with matplotlib.rc_context(charts.STYLE):
        has_gpu = lines["steady_gpu_util_pct"].notna().any()
        fig = charts.figure(8.4 if has_gpu else 4.2, 2.8)
        axes = fig.subplots(1, 2 if has_gpu else 1, squeeze=False)[0]
        for framework, line in lines.groupby("framework", sort=False):
            colour = charts.COLOURS[frameworks.index(framework) % len(charts.COLOURS)]
            axes[0].plot(
                line["batch_size"], line["images_per_s"], "o-", color=colour, label=name(framework)
            )
            if has_gpu:
                axes[1].plot(
                    line["batch_size"], line["steady_gpu_util_pct"], "o-", color=colour,
                    label=name(framework),
                )  # fmt: skip
        batches = sorted(lines["batch_size"].unique())
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.set(xlabel="batch size")
        axes[0].set_yscale("log")
        axes[0].set(ylabel="steady-state img/s")
        charts.legend_below(fig, axes[0])
        if has_gpu:
            axes[1].set(ylabel="GPU busy in steady state (NVML), %", ylim=(0, 105))
        title = f"{model} ({mode}): throughput and GPU utilisation against batch size"
        svg = charts.to_svg(fig, f"sweep-{model}-{mode}", title)
    peaks = {
        framework: f"{line['images_per_s'].max():,.0f} img/s at batch "
        f"{int(line.loc[line['images_per_s'].idxmax(), 'batch_size'])}"
        for framework, line in lines.groupby("framework", sort=False)
    }
    return charts.Chart(
        title,
        "Steady-state throughput (batch / median step; log scales: a line as steep as the "
        "batch axis is host-bound, a flat one device-bound)"
        + (
            " and NVML's GPU busy share in steady state (see a report's Phases)."
            if has_gpu
            else "; no GPU was used."
        ),
        svg,
        "Steady-state throughput against batch size, one line per framework; the highest: "
        + charts.listed(peaks)
        + ".",
    )


def build(sets: list[ResultSet], out_dir: Path) -> Document:
    check_alike(sets)
    sets = sorted(sets, key=lambda rs: int(rs.runs["batch_size"].dropna().iloc[0]))
    frame = points(sets)
    frameworks = list(dict.fromkeys(f for rs in sets for f in rs.frameworks))
    verdict, blocks, warnings = [], [], []
    if frame.empty:
        warnings.append("No run finished in any of these result sets: nothing to plot.")
    for (model, mode), lines in frame.groupby(["model", "mode"], sort=False):
        for framework, line in lines.groupby("framework", sort=False):
            if len(line) < 2:
                warnings.append(
                    f"{model} ({mode}), {name(framework)}: finished at batch "
                    f"{line['batch_size'].iloc[0]} only; no curve."
                )
                continue
            verdict.append(_sentence(model, mode, framework, line))
        rows = [
            [
                name(r.framework),
                r.batch_size,
                format_value(r.images_per_s, "img/s"),
                format_value(r.step_time_median_s, "ms"),
                "–" if pd.isna(r.gain) else f"{r.gain:.2f}",
                format_value(r.steady_gpu_util_pct, "%")
                if not pd.isna(r.steady_gpu_util_pct)
                else "not recorded",
                r.runs,
            ]
            for r in lines.itertuples()
        ]
        blocks.append(
            Block(
                f"{model} ({mode})",
                table(
                    [
                        "framework",
                        "batch",
                        "steady-state throughput",
                        "step, median",
                        "gain from the previous batch",
                        "GPU busy, steady state",
                        "runs",
                    ],
                    rows,
                    numeric={1, 2, 3, 4, 5, 6},
                ),
                [_chart(model, mode, lines, frameworks)],
                anchor=f"sweep-{model}-{mode}",
            )
        )
    devices = sorted(set(frame["device_name"])) if not frame.empty else []
    if len(devices) > 1:
        warnings.append(
            f"The sets ran on different devices ({', '.join(devices)}): the sweep mixes machines."
        )
    intro = (
        "Gain from the previous batch: log(throughput ratio) / log(batch ratio) — 1 when "
        "throughput grows as fast as the batch (the device waits for the host), 0 when it does "
        f"not grow (the device is the limit). Below {SATURATED_GAIN} a doubling adds under 11 %."
    )
    blocks.insert(0, Block("How to read it", intro, anchor="how-to-read"))
    blocks += [
        Block(
            f"Batch {int(rs.runs['batch_size'].dropna().iloc[0])}: {text(rs.path)}",
            "\n".join(f"- {line}" for line in header(rs)),
            anchor=f"set-{i}",
        )
        for i, rs in enumerate(sets)
    ]
    blocks.append(method_block(out_dir))
    batches = ", ".join(str(int(rs.runs["batch_size"].dropna().iloc[0])) for rs in sets)
    return Document(
        title=f"fwbench sweep: batch sizes {batches}",
        header=[f"{text(rs.path)}" for rs in sets],
        verdict=verdict,
        warnings=warnings,
        implications=[],
        blocks=blocks,
    )
