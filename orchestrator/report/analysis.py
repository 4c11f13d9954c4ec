"""From a result set to answers: per-run derived metrics, statistics per model and framework,
ratios against the reference framework (the first listed), each framework's regime, the verdict
and the warnings."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.report import phases, regime, stats
from orchestrator.report.resultset import ResultSet
from services.common import frameworks as registry
from services.common import predictions, steady

# Coefficient of variation above which a metric is too noisy to trust at a glance.
HIGH_COV = 0.05
# An accuracy interval wider than this (± points) is flagged as test-set noise.
NOISY_ACCURACY_POINTS = 2.0


def name(framework: str) -> str:
    """The framework's title from the registry; an unknown name (an older set) as it is."""
    known = registry.FRAMEWORKS.get(framework)
    return known.title if known else framework


# The values a metric can take, which its interval keeps to (stats.summarise). Most metrics are
# times, rates, or amounts of memory or energy: never below 0.
NON_NEGATIVE = (0.0, math.inf)
PERCENT = (0.0, 100.0)
PROPORTION = (0.0, 1.0)


@dataclass(frozen=True)
class Metric:
    column: str
    label: str
    unit: str  # how format_value prints it: s, ms, img/s, GiB, %, J, kJ, acc
    better: str  # "lower" or "higher"
    # Shown in the ratio table: times, throughputs and energy (not shares such as utilisation).
    ratio: bool = True
    bounds: tuple[float, float] = NON_NEGATIVE


METRICS = (
    Metric(
        "steady_state_images_per_s",
        "steady-state throughput (batch / median step)",
        "img/s",
        "higher",
    ),
    Metric(
        "end_to_end_images_per_s", "end-to-end throughput (images / total time)", "img/s", "higher"
    ),
    Metric("step_time_median_s", "steady-state step, median", "ms", "lower"),
    Metric("step_time_p90_s", "steady-state step, 90th percentile", "ms", "lower"),
    Metric("time_to_first_step_s", "time to first step", "s", "lower"),
    Metric("import_s", "framework import", "s", "lower"),
    Metric("data_load_s", "data load", "s", "lower"),
    Metric("build_s", "model build", "s", "lower"),
    Metric("first_step_s", "first step (incl. tracing/compilation)", "s", "lower"),
    Metric("train_time_s", "training time (sum of epochs' steps)", "s", "lower"),
    Metric("total_time_s", "total time (worker start to last epoch's end)", "s", "lower"),
    Metric("time_to_target_s", "time to target accuracy", "s", "lower"),
    Metric("between_epoch_overhead_s", "between-epoch overhead per epoch", "s", "lower"),
    Metric("steady_gpu_util_pct", "GPU busy, steady state (NVML)", "%", "higher", False, PERCENT),
    Metric("steady_power_w", "GPU power, steady state", "W", "lower", False),
    Metric(
        "steady_energy_per_1000_images_j",
        "GPU energy per 1,000 training images, steady state",
        "J",
        "lower",
    ),
    Metric(
        "energy_per_1000_images_j",
        "GPU energy per 1,000 training images, whole run",
        "J",
        "lower",
    ),
    Metric("energy_j", "GPU energy, whole run", "kJ", "lower"),
    Metric("peak_gpu_mem_bytes", "peak device memory (NVML)", "GiB", "lower"),
    Metric("peak_framework_mem_bytes", "peak allocator memory (framework)", "GiB", "lower"),
    Metric("peak_rss_bytes", "peak host memory of the worker (RSS)", "GiB", "lower"),
    Metric(
        "mean_gpu_util_pct",
        "GPU busy, whole run (NVML; first step and evaluation included)",
        "%",
        "higher",
        False,
        PERCENT,
    ),
    Metric(
        "baseline_test_accuracy",
        "test accuracy before training (epoch 0)",
        "acc",
        "higher",
        False,
        PROPORTION,
    ),
    Metric("final_test_accuracy", "test accuracy, last epoch", "acc", "higher", False, PROPORTION),
    Metric("best_test_accuracy", "test accuracy, best epoch", "acc", "higher", False, PROPORTION),
)
BY_COLUMN = {m.column: m for m in METRICS}


def format_value(value: float | None, unit: str) -> str:
    """A number with its unit, three significant digits and thousands separators."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    scaled = {"ms": 1e3, "GiB": 1 / 2**30, "kJ": 1e-3, "acc": 100}.get(unit, 1) * value
    suffix = {"acc": " %", "%": " %", "img/s": " img/s"}.get(unit, f" {unit}")
    if scaled == 0:
        return f"0{suffix}"
    digits = max(0, 2 - math.floor(math.log10(abs(scaled))))
    if unit in ("acc", "%"):
        digits = 1
    return f"{scaled:,.{digits}f}{suffix}"


def per_run(rs: ResultSet, found: phases.Phases) -> pd.DataFrame:
    """Every run with the metrics the report derives from the CSVs (see docs/results.md) and,
    from `found` (phases.of(rs)), its steady-state GPU figures and its stalled windows."""
    runs = rs.runs.copy()
    runs["steady_state_images_per_s"] = runs["batch_size"] / runs["step_time_median_s"]
    # The baseline evaluation (epoch 0) runs before training: not in the end-to-end time.
    baselines = rs.epochs[rs.epochs["epoch"] == 0] if not rs.epochs.empty else rs.epochs
    baseline = baselines.set_index("run_id") if not baselines.empty else None
    runs["baseline_test_accuracy"] = (
        runs["run_id"].map(baseline["test_accuracy"]) if baseline is not None else float("nan")
    )
    baseline_s = runs["run_id"].map(baseline["eval_time_s"]) if baseline is not None else 0.0
    end_to_end_s = runs["total_time_s"] - pd.Series(baseline_s, index=runs.index).fillna(0.0)
    runs["end_to_end_images_per_s"] = runs["train_samples"] * runs["epochs"] / end_to_end_s
    trained = runs["train_samples"] * runs["epochs"]
    runs["energy_per_1000_images_j"] = runs["energy_j"] / trained * 1000
    epochs = rs.trained_epochs
    if not epochs.empty:
        by_run = epochs.groupby("run_id")
        runs["between_epoch_overhead_s"] = runs["run_id"].map(
            by_run["between_epoch_overhead_s"].mean()
        )
        runs["best_test_accuracy"] = runs["run_id"].map(by_run["test_accuracy"].max())
    else:
        runs["between_epoch_overhead_s"] = float("nan")
        runs["best_test_accuracy"] = runs["final_test_accuracy"]
    telemetry = rs.telemetry
    runs["peak_rss_bytes"] = (
        runs["run_id"].map(telemetry.groupby("run_id")["rss_bytes"].max())
        if not telemetry.empty
        else float("nan")
    )
    runs["time_to_target_s"] = float("nan")
    in_steady = found.figures[found.figures.phase == phases.STEADY].set_index("run_id")
    for column in ("gpu_util_pct", "power_w", "energy_per_1000_images_j"):
        runs[f"steady_{column}"] = runs["run_id"].map(in_steady[column]).astype(float)
    # Counted where a run has windows: a run without Progress events has no count, not 0.
    windows = found.windows.assign(stalled=found.windows.phase == phases.STALLED)
    windows = windows.assign(stalled_s=windows.duration_s.where(windows.stalled, 0.0))
    of_run = windows.groupby("run_id")
    runs["stalled_windows"] = runs["run_id"].map(of_run["stalled"].sum())
    runs["stalled_s"] = runs["run_id"].map(of_run["stalled_s"].sum())
    return runs


def _time_to_target(runs: pd.DataFrame, epochs: pd.DataFrame, target: float) -> pd.Series:
    out = {}
    for run in runs.itertuples():
        own = epochs[epochs.run_id == run.run_id].sort_values("epoch")
        if own.empty or pd.isna(run.total_time_s):
            continue
        ends = phases.epoch_ends_s(own, run.total_time_s)
        reached = [t for t, acc in zip(ends, own.test_accuracy, strict=True) if acc >= target]
        out[run.Index] = reached[0] if reached else float("nan")
    return pd.Series(out, dtype=float)


@dataclass
class ModelAnalysis:
    label: str
    frameworks: list[str]
    # The frameworks the experiment asked for (context.json), with any that ran without being
    # listed: more than `frameworks` where one asked for failed or never reported a run.
    asked: list[str]
    # Runs per framework that ended ok, restricted to the repeats every framework completed.
    runs: dict[str, pd.DataFrame]
    not_ok: pd.DataFrame
    summaries: dict[str, dict[str, stats.Summary | None]] = field(default_factory=dict)
    # metric -> other framework -> value(reference) / value(other).
    ratios: dict[str, dict[str, stats.Ratio | None]] = field(default_factory=dict)
    accuracy: dict[str, stats.Difference | None] = field(default_factory=dict)
    target_accuracy: float | None = None
    test_samples: int | None = None
    # run_id -> the final evaluation image by image (ResultSet.test_correct), where recorded.
    test_correct: dict[str, bytes] = field(default_factory=dict)
    dropped_repeats: dict[str, int] = field(default_factory=dict)
    # The phases of the runs compared (phases.py).
    timeline: phases.Phases | None = None
    # Per framework: what limits its step (regime.py).
    regimes: dict[str, regime.Regime] = field(default_factory=dict)
    verdict: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    implications: list[str] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return self.frameworks[0]

    @property
    def others(self) -> list[str]:
        return self.frameworks[1:]

    @property
    def n(self) -> int:
        return min((len(r) for r in self.runs.values()), default=0)

    def median(self, column: str, framework: str) -> float | None:
        summary = self.summaries.get(column, {}).get(framework)
        return summary.median if summary else None


def analyse(rs: ResultSet) -> list[ModelAnalysis]:
    found = phases.of(rs)
    all_runs = per_run(rs, found)
    frameworks = rs.frameworks
    out = []
    for label, group in rs.groups:
        group = all_runs.loc[group.index]
        present = [f for f in frameworks if f in set(group.framework)]
        ok = group[group.status == "ok"]
        by_framework = {f: ok[ok.framework == f] for f in present}
        if any(frame.empty for frame in by_framework.values()):
            # A framework without a finished run leaves nothing to compare against.
            by_framework = {f: frame for f, frame in by_framework.items() if not frame.empty}
        equal = stats.equal_sets(by_framework) if len(by_framework) > 1 else by_framework
        analysis = ModelAnalysis(
            label=label,
            frameworks=[f for f in present if f in equal],
            asked=list(dict.fromkeys([*(rs.context.get("frameworks") or []), *present])),
            runs=equal,
            not_ok=group[group.status != "ok"],
            dropped_repeats={f: len(by_framework[f]) - len(equal[f]) for f in equal},
            test_correct=rs.test_correct,
        )
        tests = group["test_samples"].dropna()
        analysis.test_samples = int(tests.min()) if not tests.empty else None
        _target(analysis, rs.trained_epochs)
        analysis.timeline = found.of_runs(r for frame in equal.values() for r in frame.run_id)
        _statistics(analysis)
        analysis.regimes = {f: _regime(analysis, f, rs.floor) for f in analysis.frameworks}
        analysis.verdict = _verdict(analysis)
        analysis.warnings = _warnings(analysis)
        analysis.implications = _implications(analysis)
        out.append(analysis)
    return out


def _target(analysis: ModelAnalysis, epochs: pd.DataFrame) -> None:
    """MLPerf-style target: the lower of the frameworks' best test accuracy (median over runs)."""
    bests = [r["best_test_accuracy"].median() for r in analysis.runs.values() if not r.empty]
    bests = [b for b in bests if pd.notna(b)]
    if not bests or epochs.empty:
        return
    analysis.target_accuracy = min(bests)
    for framework, runs in analysis.runs.items():
        runs = runs.copy()
        runs["time_to_target_s"] = _time_to_target(runs, epochs, analysis.target_accuracy)
        analysis.runs[framework] = runs


def _median_step_s(steps_s: np.ndarray) -> float:
    return float(np.median(steps_s))


def _p90_step_s(steps_s: np.ndarray) -> float:
    # numpy's default interpolation: the recorder's (statistics' inclusive method).
    return float(np.quantile(steps_s, 0.9))


# The speed metrics a single run has many measurements of, one step time per step of its
# steady-state windows: each with the statistic of a batch of windows (stats.batch_values), given
# the run's batch size.
WINDOW_STATISTICS = {
    "step_time_median_s": lambda steps_s, batch: _median_step_s(steps_s),
    "step_time_p90_s": lambda steps_s, batch: _p90_step_s(steps_s),
    "steady_state_images_per_s": lambda steps_s, batch: batch / _median_step_s(steps_s),
}


def steady_windows(timeline: phases.Phases | None, run_id: str) -> list[np.ndarray]:
    """One run's steady-state windows in time order (steady.is_steady: stalled ones too, as the
    recorder's step times take them), each as its step time once per step."""
    if timeline is None:
        return []
    own = timeline.windows[
        (timeline.windows.run_id == run_id)
        & timeline.windows.phase.isin((phases.STEADY, phases.STALLED))
    ].sort_values("end_s")
    return [np.full(int(w.steps), float(w.step_s)) for w in own.itertuples()]


def _window_ratio(analysis: ModelAnalysis, column: str, other: str) -> stats.Ratio | None:
    """A single run's ratio of `column` against `other`'s, its interval from their steady-state
    windows (stats.batch_ratio); None where either run has too few windows."""
    point = stats.ratio(analysis.runs[analysis.reference][column], analysis.runs[other][column])
    statistic = WINDOW_STATISTICS[column]
    values = []
    for framework in (analysis.reference, other):
        (run,) = analysis.runs[framework].itertuples()
        batches = stats.batch_values(
            steady_windows(analysis.timeline, run.run_id),
            functools.partial(statistic, batch=run.batch_size),
        )
        if batches is None:
            return None
        values.append(batches)
    return stats.batch_ratio(point.ratio, *values) if point else None


def _statistics(analysis: ModelAnalysis) -> None:
    for metric in METRICS:
        analysis.summaries[metric.column] = {
            f: stats.summarise(stats.trimmed(runs[metric.column]), metric.bounds)
            for f, runs in analysis.runs.items()
        }
        if not metric.ratio or not analysis.others:
            continue
        reference = stats.trimmed(analysis.runs[analysis.reference][metric.column])
        analysis.ratios[metric.column] = {
            other: stats.ratio(reference, stats.trimmed(analysis.runs[other][metric.column]))
            for other in analysis.others
        }
        if metric.column in WINDOW_STATISTICS and analysis.n == 1:
            for other in analysis.others:
                within = _window_ratio(analysis, metric.column, other)
                if within is not None:
                    analysis.ratios[metric.column][other] = within
    for other in analysis.others:
        analysis.accuracy[other] = _paired_accuracy(analysis, other) or stats.accuracy_difference(
            stats.trimmed(analysis.runs[analysis.reference]["final_test_accuracy"]),
            stats.trimmed(analysis.runs[other]["final_test_accuracy"]),
            analysis.test_samples,
        )


def _paired_accuracy(analysis: ModelAnalysis, other: str) -> stats.Difference | None:
    """Single runs scored image by image on the same test images: their paired difference
    (McNemar); None where either lacks per-image results or they scored different images."""
    if analysis.n != 1:
        return None  # over repeats, run-to-run variation is what the interval must hold
    (a,), (b,) = (analysis.runs[f].itertuples() for f in (analysis.reference, other))
    if a.test_samples != b.test_samples or pd.isna(a.test_samples):
        return None
    try:
        correct = [
            predictions.unpack(analysis.test_correct[run.run_id], int(run.test_samples))
            for run in (a, b)
        ]
    except (KeyError, ValueError):
        return None
    return stats.paired_accuracy_difference(*correct)


def _regime(analysis: ModelAnalysis, framework: str, floor: pd.DataFrame) -> regime.Regime:
    runs = analysis.runs[framework]
    floor_ms = regime.floor_ms(floor, runs)
    step_s = analysis.median("step_time_median_s", framework)
    times_floor = step_s * 1000 / floor_ms if floor_ms and step_s is not None else None
    gpu = bool((runs["gpu"].fillna("none").astype(str) != "none").any())
    return regime.judge(times_floor, analysis.median("steady_gpu_util_pct", framework), gpu)


def ratio_bounds(low: float, high: float) -> str:
    """'0.95–1.08'; with a third decimal when a bound would round to 1.00, so that whether the
    interval holds 1 can be read off the text."""
    digits = 3 if "1.00" in (f"{low:.2f}", f"{high:.2f}") else 2
    return f"{low:.{digits}f}–{high:.{digits}f}"


def interval(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "single run: no interval, too few steady-state windows or none recorded"
    return f"95 % CI {ratio_bounds(low, high)}"


def _speed_phrase(reference: str, other: str, r: stats.Ratio | None, what: str) -> str:
    if r is None:
        return f"{what} not recorded"
    if r.detected is False:
        return (
            f"{what}: no difference detected ({name(reference)}/{name(other)} {r.ratio:.2f}×, "
            f"{interval(r.ci_low, r.ci_high)})"
        )
    if r.ratio >= 1:
        return f"{name(reference)} {what} {r.ratio:.2f}× faster ({interval(r.ci_low, r.ci_high)})"
    inverse_low = 1 / r.ci_high if r.ci_high else None
    inverse_high = 1 / r.ci_low if r.ci_low else None
    return f"{name(other)} {what} {1 / r.ratio:.2f}× faster ({interval(inverse_low, inverse_high)})"


def accuracy_phrase(
    a: float | None, b: float | None, d: stats.Difference | None, names: tuple[str, str]
) -> str:
    if a is None or b is None:
        return "accuracy not recorded"
    text = f"accuracy {names[0]} {a * 100:.1f} % vs {names[1]} {b * 100:.1f} %"
    if d is None:
        return text
    span = (
        f"{d.difference * 100:+.1f} points, 95 % CI {d.ci_low * 100:+.1f} to {d.ci_high * 100:+.1f}"
    )
    if d.ci_low == d.ci_high:
        return f"{text} ({span.split(',')[0]}, no spread over repeats)"
    verdict = "difference detected" if d.detected else "no difference detected"
    return f"{text}: {verdict} ({span}; {d.method})"


def _verdict(analysis: ModelAnalysis) -> list[str]:
    if not analysis.frameworks:
        return [f"{analysis.label}: no run finished, nothing to compare."]
    if not analysis.others:
        (only,) = analysis.frameworks
        failed = [name(f) for f in analysis.asked if f != only]
        if failed:
            return [
                f"{analysis.label}: only {name(only)} finished a run ({', '.join(failed)} asked "
                f"for but without a finished run), so there is nothing to compare; {name(only)} "
                f"{analysis.regimes[only]}."
            ]
        return [f"{analysis.label}: {_alone(analysis, only)}"]
    sentences = []
    ref = analysis.reference
    for other in analysis.others:
        parts = [
            _speed_phrase(
                ref, other, analysis.ratios["steady_state_images_per_s"][other], "steady-state"
            )
        ]
        t_ref = analysis.median("time_to_first_step_s", ref)
        t_other = analysis.median("time_to_first_step_s", other)
        start = analysis.ratios["time_to_first_step_s"][other]
        if t_ref is not None and t_other is not None:
            slower = other if t_other > t_ref else ref
            gap = abs(t_other - t_ref)
            if (start is not None and start.detected is False) or gap < 0.05:
                parts.append(
                    f"time to first step: no difference detected ({t_ref:.1f} vs {t_other:.1f} s)"
                )
            else:
                parts.append(
                    f"{name(slower)} needs {gap:.1f} s more before its first step "
                    f"({max(t_ref, t_other):.1f} vs {min(t_ref, t_other):.1f} s)"
                )
        parts.append(
            accuracy_phrase(
                _mean(analysis, "final_test_accuracy", ref),
                _mean(analysis, "final_test_accuracy", other),
                analysis.accuracy.get(other),
                (name(ref), name(other)),
            )
        )
        parts.append("; ".join(f"{name(f)} {analysis.regimes[f]}" for f in (ref, other)))
        label = analysis.label
        if len(analysis.others) > 1:
            label += f", {name(ref)} vs {name(other)}"
        sentences.append(f"{label}: " + "; ".join(parts) + ".")
    return sentences


def _alone(analysis: ModelAnalysis, only: str) -> str:
    """The verdict of a one-framework set: what it shows of the one framework asked for."""
    shown = []
    throughput = analysis.summaries.get("steady_state_images_per_s", {}).get(only)
    if throughput is not None:
        spread = (
            f" (95 % t interval {format_value(throughput.ci_low, 'img/s')}–"
            f"{format_value(throughput.ci_high, 'img/s')})"
            if throughput.ci_low is not None
            else ""
        )
        shown.append(f"steady state {format_value(throughput.mean, 'img/s')}{spread}")
    start = analysis.median("time_to_first_step_s", only)
    if start is not None:
        shown.append(f"first step {start:.1f} s after worker start")
    accuracy = _mean(analysis, "final_test_accuracy", only)
    if accuracy is not None:
        shown.append(f"test accuracy {accuracy * 100:.1f} %")
    figures = ", ".join(shown) or "no speed or accuracy recorded"
    return (
        f"a one-framework set: only {name(only)} was asked for, so it compares no frameworks and "
        f"shows {name(only)}'s own figures over {analysis.n} run(s): {figures}; {name(only)} "
        f"{analysis.regimes[only]}."
    )


def _mean(analysis: ModelAnalysis, column: str, framework: str) -> float | None:
    summary = analysis.summaries.get(column, {}).get(framework)
    return summary.mean if summary else None


def _warnings(analysis: ModelAnalysis) -> list[str]:
    out = []
    label = analysis.label
    if not analysis.not_ok.empty:
        counts = analysis.not_ok.groupby(["framework", "status"]).size()
        listed = ", ".join(f"{name(f)} {n}× {status}" for (f, status), n in counts.items())
        out.append(
            f"{label}: runs that did not finish ok ({listed}); see 'Runs that did not finish'."
        )
    dropped = {f: n for f, n in analysis.dropped_repeats.items() if n}
    if dropped:
        out.append(
            f"{label}: to compare equal sets, repeats that did not finish in every framework are "
            f"left out ({', '.join(f'{name(f)}: {n}' for f, n in dropped.items())}); "
            f"n = {analysis.n} per framework."
        )
    if analysis.frameworks and analysis.n == 1:
        out.append(
            f"{label}: a single repeat per framework: the steady-state speed ratios' intervals "
            "(from the runs' windows, where recorded) hold within-run noise only, other times "
            "have no interval, and run-to-run noise is unknown; use --repeats 3 or more (5+ for "
            "MLPerf's trimming)."
        )
    for d in analysis.accuracy.values():
        if d is not None and (d.ci_high - d.ci_low) / 2 * 100 > NOISY_ACCURACY_POINTS:
            tests = analysis.test_samples
            one = f" one image is {100 / tests:.2f} points;" if tests else ""
            out.append(
                f"{label}: accuracy is within test-set noise at {tests or '?'} test images:{one} "
                f"the 95 % interval of the difference is {(d.ci_high - d.ci_low) * 100:.1f} points"
                " wide. Use more test images (--test-limit 0 uses all) or more repeats."
            )
            break
    noisy = []
    for column in ("step_time_median_s", "time_to_first_step_s", "total_time_s"):
        for f, summary in analysis.summaries.get(column, {}).items():
            if summary and summary.cov is not None and summary.cov > HIGH_COV:
                noisy.append(f"{name(f)} {BY_COLUMN[column].label} {summary.cov * 100:.0f} %")
    if noisy:
        out.append(
            f"{label}: high run-to-run variation (coefficient of variation over 5 %): "
            + ", ".join(noisy)
            + ". Close other work on the machine or add repeats."
        )
    host_bound = {f: r for f, r in analysis.regimes.items() if r.kind == regime.HOST}
    if host_bound:
        which = ", ".join(f"{name(f)} ({r.evidence})" for f, r in host_bound.items())
        remedy = regime.advice(_mode(analysis))
        out.append(
            f"{label}: host-bound: {which}. The step waits on the host (Python, kernel launches, "
            "input), so this measures the framework's per-step overhead more than the device. "
            + remedy
        )
    for framework, runs in analysis.runs.items():
        stalled = runs[runs["stalled_windows"] > 0]
        if stalled.empty:
            continue
        repeats = ", ".join(str(int(r) + 1) for r in sorted(stalled["repeat"]))
        out.append(
            f"{label}: interference: {name(framework)} had {int(stalled['stalled_windows'].sum())}"
            f" stalled window(s), each step over {steady.STALL_FACTOR:g}× its run's median "
            f"({stalled['stalled_s'].sum():.1f} s in all; repeat {repeats}): something else held "
            "the machine. Training time, total time and time to target include them; the step "
            "median barely moves; the steady-state GPU figures leave them out (their own row "
            "under 'Phases')."
        )
    return out


def _mode(analysis: ModelAnalysis) -> str:
    """The mode of the runs analysed: one per analysis (ResultSet.groups)."""
    runs = next(iter(analysis.runs.values()))
    return str(runs["mode"].iloc[0])


def _time_to_steady_state_s(analysis: ModelAnalysis, framework: str) -> float | None:
    """The median over `framework`'s runs of its time to first step plus what its warm-up windows
    took beyond steady-state steps (JAX compiling the epoch's remainder and short last batch, a
    CUDA graph captured for it): the fixed cost a job pays before steady state. Without recorded
    windows, the time to first step alone."""
    times = []
    for run in analysis.runs[framework].itertuples():
        if pd.isna(run.time_to_first_step_s):
            continue
        excess_s = 0.0
        if analysis.timeline is not None and not pd.isna(run.step_time_median_s):
            windows = analysis.timeline.windows
            warm = windows[(windows.run_id == run.run_id) & (windows.phase == phases.WARMUP)]
            excess_s = float((warm.duration_s - warm.steps * run.step_time_median_s).sum())
        times.append(run.time_to_first_step_s + max(excess_s, 0.0))
    return float(np.median(times)) if times else None


def _break_even(analysis: ModelAnalysis, other: str) -> str | None:
    """Which of the reference and `other` finishes a job first, by its length: claimed only where
    the steady-state ratio's interval excludes 1. A job's time is its time to steady state (the
    first step's tracing or compilation and the warm-up's, _time_to_steady_state_s) plus, per
    training image, the steady-state time of one image and its share of the epoch's
    between-epoch overhead."""
    ref = analysis.reference
    pair = (ref, other)
    thr = {f: analysis.median("steady_state_images_per_s", f) for f in pair}
    start = {f: _time_to_steady_state_s(analysis, f) for f in pair}
    if None in thr.values() or None in start.values():
        return None
    reached = (
        "reaches steady state {gap:.1f} s sooner (first step and warm-up: "
        + ", ".join(f"{name(f)} {start[f]:.1f} s" for f in pair)
        + ")"
    )
    ahead_at_start = min(start, key=start.get)
    gap_s = abs(start[ref] - start[other])
    steady_ratio = analysis.ratios["steady_state_images_per_s"][other]
    if steady_ratio is None or steady_ratio.detected is not True:
        why = (
            "it has no interval (a single run with too few steady-state windows, or none recorded)"
            if steady_ratio is None or steady_ratio.detected is None
            else f"its 95 % interval {ratio_bounds(steady_ratio.ci_low, steady_ratio.ci_high)} "
            "holds 1"
        )
        ratio_text = f" {steady_ratio.ratio:.3f}" if steady_ratio is not None else ""
        return (
            f"no break-even can be claimed between {name(ref)} and {name(other)}: the "
            f"steady-state throughput ratio{ratio_text} ({name(ref)} / {name(other)}) is not "
            f"shown to differ from 1, as {why}. {name(ahead_at_start)} "
            f"{reached.format(gap=gap_s)}, which decides short jobs; which finishes a long job "
            "first, these runs cannot tell (more repeats or a longer run can)."
        )
    train_samples = analysis.runs[ref]["train_samples"].median()
    overhead = {f: analysis.median("between_epoch_overhead_s", f) for f in pair}
    with_overhead = train_samples > 0 and None not in overhead.values()
    per_image_s = {
        f: 1 / thr[f] + (overhead[f] / train_samples if with_overhead else 0.0) for f in pair
    }
    steady_fast = ref if steady_ratio.ratio > 1 else other
    shown = (
        f"steady-state throughput {name(ref)} / {name(other)} {steady_ratio.ratio:.3f}, "
        f"{interval(steady_ratio.ci_low, steady_ratio.ci_high)}"
    )
    fast = min(per_image_s, key=per_image_s.get)
    slow = other if fast == ref else ref
    costs = (
        "; each image's cost counts its share of the between-epoch overhead ("
        + ", ".join(f"{name(f)} {overhead[f]:.2f} s per epoch" for f in pair)
        + "), evaluation left out"
        if with_overhead
        else "; the between-epoch overhead was not recorded, so it is left out"
    )
    if fast != steady_fast:
        return (
            f"no break-even can be claimed between {name(ref)} and {name(other)}: "
            f"{name(steady_fast)} is faster in steady state, but {name(fast)}'s smaller "
            f"between-epoch overhead outweighs it per image{costs}."
        )
    if ahead_at_start == fast or per_image_s[slow] <= per_image_s[fast]:
        return (
            f"{name(fast)} reaches steady state no later (first step and warm-up: "
            + ", ".join(f"{name(f)} {start[f]:.1f} s" for f in pair)
            + f") and is faster per image ({shown}{costs}): it finishes first whatever the "
            "job's length."
        )
    break_even = (start[fast] - start[slow]) / (per_image_s[slow] - per_image_s[fast])
    in_epochs = round(break_even / train_samples) if train_samples > 0 else None
    epochs = (
        f" (≈ {in_epochs:,} epoch{'' if in_epochs == 1 else 's'} of this training set)"
        if in_epochs is not None
        else ""
    )
    return (
        f"{name(slow)} {reached.format(gap=start[fast] - start[slow])}, "
        f"{name(fast)} is faster per image ({shown}{costs}): jobs shorter than "
        f"about {break_even:,.0f} training images{epochs} finish first on {name(slow)}, longer "
        f"ones on {name(fast)}."
    )


def _implications(analysis: ModelAnalysis) -> list[str]:
    """What the numbers mean for a job: start-up against steady state, memory, energy."""
    out = []
    if not analysis.others:
        return out
    for other in analysis.others:
        line = _break_even(analysis, other)
        if line:
            out.append(f"{analysis.label}: {line}")
    memory_column = next(
        (
            c
            for c in ("peak_gpu_mem_bytes", "peak_rss_bytes")
            if any(s is not None for s in analysis.summaries.get(c, {}).values())
        ),
        None,
    )
    if memory_column:
        values = ", ".join(
            f"{name(f)} {format_value(s.median, 'GiB')}"
            for f, s in analysis.summaries[memory_column].items()
            if s is not None
        )
        where = "device memory" if memory_column == "peak_gpu_mem_bytes" else "host memory (RSS)"
        out.append(
            f"{analysis.label}: peak {where}: {values}; what the "
            f"{'GPU' if memory_column == 'peak_gpu_mem_bytes' else 'host'} has beyond the larger "
            "is the headroom for a larger batch or model."
        )
    energy = analysis.summaries.get("steady_energy_per_1000_images_j", {})
    if any(s is not None for s in energy.values()):
        values = ", ".join(
            f"{name(f)} {format_value(s.median, 'J')}" for f, s in energy.items() if s is not None
        )
        out.append(
            f"{analysis.label}: GPU energy per 1,000 training images in steady state: {values}."
        )
    return out
