"""Charts as inline SVG strings (matplotlib), so report.html stays one self-contained file."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd

# Figure without pyplot: no GUI backend, no global figure registry to leak between reports.
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from orchestrator.report import phases
from orchestrator.report.analysis import ModelAnalysis, name
from services.common import steady

# Paul Tol's colour-blind-safe palette: one colour per framework, in the order listed.
COLOURS = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377")
STYLE = {
    # Text stays text (smaller files, selectable, the page's own font).
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
}
# Long runs sample 10 times a second: thinning keeps an SVG small without changing its shape.
MAX_POINTS = 400


@dataclass(frozen=True)
class Chart:
    title: str
    caption: str
    svg: str
    # The text alternative: what the chart shows, in words and numbers, for a reader who cannot
    # see it (report.md, a screen reader).
    alt: str


def _colour(frameworks: list[str], framework: str) -> str:
    return COLOURS[frameworks.index(framework) % len(COLOURS)]


def to_svg(fig, salt: str, title: str) -> str:
    """The figure as inline SVG, titled `title` in the figure itself."""
    fig.suptitle(title, fontweight="bold")
    # A salt per chart keeps the ids of clip paths and markers unique among the page's SVGs.
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    # Inline in HTML the parser knows the SVG and XLink namespaces: without the declarations the
    # page holds no URL at all, which tests/test_report.py checks.
    return re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg)


def figure(width_in: float, height_in: float) -> Figure:
    """A figure laid out by constrained layout: it makes room for the title, the axis labels and a
    legend outside the axes, with a gap between rows (h_pad) that the browser's font, which may
    be wider or taller than matplotlib's (svg.fonttype none), does not close."""
    return Figure(
        figsize=(width_in, height_in), layout=ConstrainedLayoutEngine(h_pad=0.1, w_pad=0.06)
    )


def _figure(panels: int, height_in: float = 2.6):
    fig = figure(4.2 * panels, height_in)
    axes = fig.subplots(1, panels, squeeze=False)
    return fig, list(axes[0])


def legend_below(fig, ax, columns: int = 5) -> None:
    """The legend of `ax`'s artists below every axes and its labels, never over the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(columns, len(handles)),
            frameon=False,
        )


def listed(values: dict[str, str]) -> str:
    return ", ".join(f"{name(f)} {v}" for f, v in values.items())


def learning_curves(analysis: ModelAnalysis, epochs: pd.DataFrame) -> Chart | None:
    run_ids = {f: set(r.run_id) for f, r in analysis.runs.items()}
    if epochs.empty or not any(run_ids.values()):
        return None
    with matplotlib.rc_context(STYLE):
        fig, (acc_ax, loss_ax) = _figure(2)
        for framework, ids in run_ids.items():
            own = epochs[epochs.run_id.isin(ids)]
            if own.empty:
                continue
            colour = _colour(analysis.frameworks, framework)
            by_epoch = own.groupby("epoch")
            x = by_epoch.size().index.to_numpy()
            for ax, column, scale in ((acc_ax, "test_accuracy", 100), (loss_ax, "test_loss", 1)):
                values = by_epoch[column]
                ax.plot(x, values.mean() * scale, marker="o", color=colour, label=name(framework))
                if by_epoch.size().max() > 1:
                    ax.fill_between(
                        x, values.min() * scale, values.max() * scale, color=colour, alpha=0.2
                    )
        acc_ax.set(title="test accuracy", xlabel="epoch", ylabel="%")
        loss_ax.set(title="test loss", xlabel="epoch", ylabel="cross-entropy")
        for ax in (acc_ax, loss_ax):
            ax.xaxis.get_major_locator().set_params(integer=True)
        legend_below(fig, acc_ax)
        title = "Accuracy and loss per epoch"
        svg = to_svg(fig, f"{analysis.label}-curves", title)
    last = {
        f: epochs[epochs.run_id.isin(ids)].groupby("epoch")["test_accuracy"].mean()
        for f, ids in run_ids.items()
    }
    return Chart(
        title,
        "Mean over repeats; the band spans the lowest to the highest repeat. Epoch 0 is the model "
        "before training (the baseline); epoch N, after N epochs of training.",
        svg,
        "Test accuracy and test loss per epoch, one line per framework; test accuracy at the "
        "last epoch: "
        + listed({f: f"{a.iloc[-1] * 100:.1f} %" for f, a in last.items() if not a.empty})
        + ".",
    )


def throughput(analysis: ModelAnalysis) -> Chart | None:
    panels = [
        ("steady_state_images_per_s", "steady state (batch / median step)"),
        ("end_to_end_images_per_s", "end to end (images / total time)"),
    ]
    if not any(analysis.summaries.get(c, {}).get(f) for c, _ in panels for f in analysis.runs):
        return None
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(2)
        for ax, (column, title) in zip(axes, panels, strict=True):
            for i, framework in enumerate(analysis.frameworks):
                s = analysis.summaries[column].get(framework)
                if s is None:
                    continue
                error = None
                if s.ci_low is not None:
                    error = [[s.mean - s.ci_low], [s.ci_high - s.mean]]
                ax.bar(
                    i,
                    s.mean,
                    yerr=error,
                    capsize=6,
                    color=_colour(analysis.frameworks, framework),
                    width=0.6,
                )
                ax.annotate(
                    f"{s.mean:,.0f}",
                    (i, s.mean),
                    ha="center",
                    va="bottom",
                    xytext=(0, 3),
                    textcoords="offset points",
                )
            ax.set_xticks(range(len(analysis.frameworks)), map(name, analysis.frameworks))
            ax.set(title=title, ylabel="images/s")
            ax.margins(y=0.15)
        title = "Throughput: steady state and end to end"
        svg = to_svg(fig, f"{analysis.label}-throughput", title)
    means = {
        label: {
            f: f"{s.mean:,.0f} img/s"
            for f in analysis.frameworks
            if (s := analysis.summaries[column].get(f)) is not None
        }
        for column, label in panels
    }
    return Chart(
        title,
        "Mean over repeats; whiskers are the 95 % t interval (none for a single run). Steady "
        "state excludes start-up; end to end includes import, data, build and the first step.",
        svg,
        "Bars of images per second. "
        + " ".join(f"{label.capitalize()}: {listed(v)}." for label, v in means.items() if v),
    )


STARTUP = (
    ("import_s", "import"),
    ("data_load_s", "data load"),
    ("build_s", "model build"),
    ("first_step_s", "first step"),
)


def startup(analysis: ModelAnalysis) -> Chart | None:
    totals = {f: analysis.median("time_to_first_step_s", f) for f in analysis.frameworks}
    if not any(v is not None for v in totals.values()):
        return None
    with matplotlib.rc_context(STYLE):
        # The title above and the legend below the bars take 1.4 inches.
        fig, (ax,) = _figure(1, height_in=1.4 + 0.45 * len(analysis.frameworks))
        fig.set_figwidth(7)
        frameworks = analysis.frameworks[::-1]  # first listed on top
        left = np.zeros(len(frameworks))
        parts = [*STARTUP, (None, "other (worker start, hand-offs)")]
        shades = ("#4477AA", "#66CCEE", "#228833", "#EE6677", "#BBBBBB")
        for (column, label), shade in zip(parts, shades, strict=True):
            if column is None:
                widths = np.array(
                    [max(0.0, (totals[f] or 0) - left[i]) for i, f in enumerate(frameworks)]
                )
            else:
                widths = np.array([analysis.median(column, f) or 0.0 for f in frameworks])
            ax.barh(range(len(frameworks)), widths, left=left, color=shade, label=label)
            left += widths
        for i, f in enumerate(frameworks):
            if totals[f] is not None:
                ax.annotate(
                    f"{totals[f]:.1f} s",
                    (left[i], i),
                    va="center",
                    xytext=(4, 0),
                    textcoords="offset points",
                )
        ax.set_yticks(range(len(frameworks)), map(name, frameworks))
        ax.set(xlabel="seconds from worker start")
        ax.margins(x=0.12)
        legend_below(fig, ax)
        title = "Time to first step"
        svg = to_svg(fig, f"{analysis.label}-startup", title)
    return Chart(
        title,
        "Medians over repeats, stacked: import, data load, model build, the first training step "
        "(tracing or compilation included) and the rest of the time to the first step.",
        svg,
        "Stacked horizontal bars, one per framework; time to first step: "
        + listed({f: f"{t:.1f} s" for f, t in totals.items() if t is not None})
        + ".",
    )


def telemetry(analysis: ModelAnalysis, samples: pd.DataFrame, epochs: pd.DataFrame) -> Chart | None:
    """One run per framework (the first repeat kept), over time, with epoch ends marked."""
    first = {f: r.sort_values("repeat").iloc[0] for f, r in analysis.runs.items() if not r.empty}
    if samples.empty or not first:
        return None
    own = samples[samples.run_id.isin({r.run_id for r in first.values()})]
    # A run over several devices has a row per device and instant: its first device's, drawn as
    # one line (the Devices section has every device's).
    several = "device_index" in own and own["device_index"].fillna(0).gt(0).any()
    if several:
        own = own[own["device_index"].fillna(0) == 0]
    if own.empty:
        return None
    gpu = own["gpu_util_pct"].notna().any()
    if gpu:
        panels = [("gpu_util_pct", "GPU busy (NVML)", "%", 1)]
        if own["sm_active_pct"].notna().any():
            panels.append(("sm_active_pct", "SM activity", "%", 1))
        panels += [
            ("mem_used_bytes", "device memory used", "GiB", 2**-30),
            ("power_w", "board power", "W", 1),
        ]
    else:
        panels = [("cpu_pct", "worker CPU (100 = one core)", "%", 1)]
        panels.append(("rss_bytes", "worker memory (RSS)", "GiB", 2**-30))
    with matplotlib.rc_context(STYLE):
        columns = 2
        rows = (len(panels) + 1) // columns
        fig = figure(8.4, 2.4 * rows)
        axes = fig.subplots(rows, columns, squeeze=False)
        axes = list(axes.flat)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        for framework, run in first.items():
            colour = _colour(analysis.frameworks, framework)
            series = own[own.run_id == run.run_id].sort_values("t_s")
            step = max(1, len(series) // MAX_POINTS)
            series = series.iloc[::step]
            run_epochs = epochs[epochs.run_id == run.run_id]
            ends = phases.epoch_ends_s(run_epochs, run.total_time_s) if not run_epochs.empty else []
            for ax, (column, title, unit, scale) in zip(axes, panels, strict=False):
                ax.plot(
                    series.t_s, series[column] * scale, color=colour, lw=1.2, label=name(framework)
                )
                for end in ends:
                    ax.axvline(end, color=colour, ls=":", lw=1)
                ax.set(title=title, ylabel=unit, xlabel="seconds from worker start")
        legend_below(fig, axes[0])
        what = "GPU" if gpu else "CPU-only run: worker CPU and memory"
        title = f"Over time ({what})"
        svg = to_svg(fig, f"{analysis.label}-telemetry", title)
    return Chart(
        title,
        "The first repeat of each framework"
        + ("; of a run over several devices, its first device" if several else "")
        + "; dotted lines mark the end of each epoch. "
        + (
            "GPU busy is NVML's share of time a kernel ran; SM activity is how much of the chip "
            "the kernels filled."
            if gpu
            else "No GPU was used, so GPU series are empty."
        ),
        svg,
        "Line charts over seconds from worker start, one line per framework, of "
        + ", ".join(title for _, title, _, _ in panels)
        + "; means over the run: "
        + "; ".join(
            f"{title} "
            + listed(
                {
                    f: f"{own[own.run_id == run.run_id][column].mean() * scale:,.1f} {unit}"
                    for f, run in first.items()
                }
            )
            for column, title, unit, scale in panels
        )
        + ".",
    )


def step_times(analysis: ModelAnalysis) -> Chart | None:
    """Each window's step over the run, one run per framework: the one with the most stalled
    windows, the first repeat where none stalled."""
    windows = analysis.timeline.windows if analysis.timeline else None
    if windows is None or windows.empty:
        return None
    shown = {}
    for framework, runs in analysis.runs.items():
        timed = runs[runs.run_id.isin(windows.run_id)].sort_values("repeat")
        if not timed.empty:
            shown[framework] = timed.loc[timed["stalled_windows"].idxmax()]
    if not shown:
        return None
    stalled_count = 0
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _figure(1, height_in=2.8)
        fig.set_figwidth(8.4)
        for framework, run in shown.items():
            own = windows[(windows.run_id == run.run_id) & (windows.phase != phases.FIRST)]
            colour = _colour(analysis.frameworks, framework)
            label = f"{name(framework)}, repeat {int(run['repeat']) + 1}"
            # One segment per window, over its time: evaluation and the time between epochs
            # show as gaps.
            ax.hlines(own.step_s * 1e3, own.start_s, own.end_s, color=colour, lw=2, label=label)
            stalled = own[own.phase == phases.STALLED]
            stalled_count += len(stalled)
            if not stalled.empty:
                middle_s = (stalled.start_s + stalled.end_s) / 2
                ax.plot(middle_s, stalled.step_s * 1e3, "x", color="black", ms=8, mew=2)
        if stalled_count:
            ax.plot([], [], "x", color="black", ms=8, mew=2, label="stalled window")
        ax.set(title="step time per window", xlabel="seconds from worker start", ylabel="ms / step")
        legend_below(fig, ax)
        title = "Step time per window"
        svg = to_svg(fig, f"{analysis.label}-steps", title)
    runs = ", ".join(f"{name(f)} repeat {int(run['repeat']) + 1}" for f, run in shown.items())
    medians = {
        f: f"{np.median(windows[windows.run_id == run.run_id].step_s) * 1e3:.2f} ms"
        for f, run in shown.items()
    }
    return Chart(
        title,
        f"{runs}: each window's mean step between two device synchronisations, drawn over its "
        "time (gaps: evaluation and the time between epochs); the first step, with its "
        "compilation, left out. "
        + (
            f"× marks a stalled window (step over {steady.STALL_FACTOR:g}× the run's median): "
            f"{stalled_count} here."
            if stalled_count
            else f"No stalled window (step over {steady.STALL_FACTOR:g}× the run's median)."
        ),
        svg,
        "Each window's step time in ms over seconds from worker start, one line per framework; "
        f"median window step: {listed(medians)}; {stalled_count} stalled window(s).",
    )


def memory(analysis: ModelAnalysis) -> Chart | None:
    kinds = [
        ("peak_gpu_mem_bytes", "device (NVML)"),
        ("peak_framework_mem_bytes", "framework allocator"),
        ("peak_rss_bytes", "host RSS"),
    ]
    kinds = [
        (c, label)
        for c, label in kinds
        if any(analysis.summaries.get(c, {}).get(f) for f in analysis.frameworks)
    ]
    if not kinds:
        return None
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _figure(1)
        fig.set_figwidth(2.5 + 1.5 * len(kinds))
        width = 0.7 / len(analysis.frameworks)
        for i, framework in enumerate(analysis.frameworks):
            values = [analysis.median(c, framework) or 0 for c, _ in kinds]
            x = np.arange(len(kinds)) + (i - (len(analysis.frameworks) - 1) / 2) * width
            ax.bar(
                x,
                np.array(values) / 2**30,
                width,
                color=_colour(analysis.frameworks, framework),
                label=name(framework),
            )
        ax.set_xticks(range(len(kinds)), [label for _, label in kinds])
        ax.set_xlim(-0.6, len(kinds) - 0.4)
        ax.set(ylabel="GiB")
        ax.margins(y=0.2)
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
        title = "Peak memory"
        svg = to_svg(fig, f"{analysis.label}-memory", title)
    peaks = "; ".join(
        f"{label}: "
        + listed(
            {f: f"{(analysis.median(c, f) or 0) / 2**30:.2f} GiB" for f in analysis.frameworks}
        )
        for c, label in kinds
    )
    return Chart(title, "Medians over repeats.", svg, f"Bars of peak memory in GiB. {peaks}.")


def energy(analysis: ModelAnalysis) -> Chart | None:
    values = {f: analysis.median("steady_energy_per_1000_images_j", f) for f in analysis.frameworks}
    values = {f: v for f, v in values.items() if v is not None}
    if not values:
        return None
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _figure(1)
        fig.set_figwidth(5)
        for i, (framework, value) in enumerate(values.items()):
            ax.bar(i, value, color=_colour(analysis.frameworks, framework), width=0.6)
        ax.set_xticks(range(len(values)), map(name, values))
        ax.set(ylabel="J per 1,000 training images")
        title = "GPU energy per 1,000 training images, steady state"
        svg = to_svg(fig, f"{analysis.label}-energy", title)
    return Chart(
        title,
        "Medians over repeats: the energy of steady-state training only (see Phases).",
        svg,
        "Bars of joules per 1,000 training images: "
        + listed({f: f"{v:,.1f} J" for f, v in values.items()})
        + ".",
    )


def for_model(analysis: ModelAnalysis, epochs: pd.DataFrame, samples: pd.DataFrame) -> list[Chart]:
    charts = (
        learning_curves(analysis, epochs),
        throughput(analysis),
        startup(analysis),
        telemetry(analysis, samples, epochs),
        step_times(analysis),
        memory(analysis),
        energy(analysis),
    )
    return [c for c in charts if c is not None]
