"""Statistics of repeated measurements, with scipy: summaries, ratios and accuracy differences.

Methods (stated in the report and in docs/results.md):
- a summary's 95 % interval is Student's t interval of the mean, clipped to the values the
  quantity can take (a time is never below 0, an accuracy never outside 0-1);
- a ratio of two frameworks' times or throughputs is the ratio of geometric means, with a Welch
  t interval computed on log values and exponentiated (times are positive and skewed, and a
  log-scale difference is a ratio);
- a speed ratio of single runs (n = 1 per side) takes its interval from the runs' steady-state
  windows by batch means: each run's windows, in order, cut into WINDOW_BATCHES batches of
  consecutive windows, the statistic (median step, p90, throughput) taken per batch; Welch's t
  interval on the log batch values' standard error, about the log of the runs' own ratio. Batches
  of consecutive windows absorb the windows' autocorrelation; the interval says how far the
  ratio could move within these runs, not from one run to the next (repeats say that: from two
  repeats on, the repeats' values are the units, as above);
- an accuracy difference of single runs scored on the same test images is paired: McNemar's exact
  test on the images one run got right and the other wrong, with Bonett and Price's adjusted Wald
  interval for paired proportions; where the per-image results are missing, Newcombe's hybrid
  score interval (his method 10: the two Wilson score intervals combined) on the test-set size,
  as if the runs were independent samples; over repeats it is Welch's t interval of the
  difference of mean accuracies, clipped to -1..1 (run-to-run variation dominates there).

Clipping keeps the intervals' coverage: the true mean of a quantity lies within the quantity's own
bounds, so the part of a t interval beyond them (wide with few repeats: with 2, the t quantile is
12.7) holds no value the mean can have.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd


def scipy_stats():
    """scipy.stats, imported on first use: it takes over half a second to import, which every
    fwbench command (`--help` included) would pay at start-up for what only the report needs."""
    from scipy import stats

    return stats


CONFIDENCE = 0.95
# What a difference of two accuracies (proportions, 0-1) can be.
DIFFERENCE_OF_PROPORTIONS = (-1.0, 1.0)
# MLPerf's olympic rule: with at least this many repeats, drop the lowest and highest value.
TRIM_FROM = 5


def trimmed(values: pd.Series) -> pd.Series:
    """Values without the lowest and highest one when there are at least TRIM_FROM of them."""
    values = values.dropna().sort_values()
    return values.iloc[1:-1] if len(values) >= TRIM_FROM else values


def equal_sets(runs_by_side: Mapping[str, pd.DataFrame], key: str = "repeat") -> dict:
    """The runs of each side restricted to the `key` values every side has, so that no side is
    compared with more (or other) repeats than another after a run failed."""
    common = None
    for frame in runs_by_side.values():
        keys = set(frame[key])
        common = keys if common is None else common & keys
    return {side: frame[frame[key].isin(common or set())] for side, frame in runs_by_side.items()}


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    median: float
    # Sample standard deviation, confidence interval and coefficient of variation: None for n=1,
    # where one value says nothing about spread.
    std: float | None
    ci_low: float | None
    ci_high: float | None
    cov: float | None


def clipped(low: float, high: float, bounds: tuple[float, float]) -> tuple[float, float]:
    """The interval low..high within bounds (the values its quantity can take)."""
    floor, ceiling = bounds
    return min(max(low, floor), ceiling), max(min(high, ceiling), floor)


def summarise(values: pd.Series, bounds: tuple[float, float]) -> Summary | None:
    """Summary of a metric's values over (trimmed) repeats, its interval within bounds (the
    values the metric can take, e.g. (0, inf) for a time); None when there is no value."""
    values = values.dropna().astype(float)
    if values.empty:
        return None
    mean, median = float(values.mean()), float(values.median())
    if len(values) == 1:
        return Summary(1, mean, median, None, None, None, None)
    std = float(values.std(ddof=1))
    if std == 0:
        low = high = mean
    else:
        low, high = scipy_stats().t.interval(
            CONFIDENCE, len(values) - 1, loc=mean, scale=std / math.sqrt(len(values))
        )
    low, high = clipped(float(low), float(high), bounds)
    cov = std / abs(mean) if mean else None
    return Summary(len(values), mean, median, std, low, high, cov)


REPEATS = "over repeats"
BATCH_MEANS = "within the runs (batch means of steady-state windows)"


@dataclass(frozen=True)
class Ratio:
    """value(a) / value(b): a ratio of geometric means, with its interval when both sides have
    at least two values."""

    ratio: float
    ci_low: float | None
    ci_high: float | None
    n_a: int
    n_b: int
    # How the interval was computed: REPEATS or BATCH_MEANS; None without an interval.
    method: str | None = None

    @property
    def detected(self) -> bool | None:
        """Whether the interval excludes 1; None when there is no interval."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return not self.ci_low <= 1 <= self.ci_high


def scaling_efficiency(throughput: Ratio, devices: int, devices_base: int) -> Ratio:
    """Images/s per device over the base's: with a base of one device, images/s on N devices
    over N × images/s on one (1: perfect scaling). `throughput` is the ratio of images/s on
    `devices` over images/s on `devices_base`; the device counts are exact, so the interval is the
    throughput ratio's, scaled alike, and `detected` says whether it excludes perfect scaling."""
    factor = devices_base / devices
    return dataclasses.replace(
        throughput,
        ratio=throughput.ratio * factor,
        ci_low=None if throughput.ci_low is None else throughput.ci_low * factor,
        ci_high=None if throughput.ci_high is None else throughput.ci_high * factor,
    )


def ratio(a: pd.Series, b: pd.Series) -> Ratio | None:
    a, b = a.dropna().astype(float), b.dropna().astype(float)
    a, b = a[a > 0], b[b > 0]
    if a.empty or b.empty:
        return None
    log_a, log_b = np.log(a.to_numpy()), np.log(b.to_numpy())
    point = math.exp(log_a.mean() - log_b.mean())
    if len(a) < 2 or len(b) < 2:
        return Ratio(point, None, None, len(a), len(b))
    if np.ptp(log_a) == 0 and np.ptp(log_b) == 0:
        return Ratio(point, point, point, len(a), len(b), method=REPEATS)
    test = scipy_stats().ttest_ind(log_a, log_b, equal_var=False)
    interval = test.confidence_interval(CONFIDENCE)
    return Ratio(
        point, math.exp(interval.low), math.exp(interval.high), len(a), len(b), method=REPEATS
    )


# Batch means: at most this many batches of consecutive windows per run, at least MIN_BATCHES of
# at least MIN_BATCH_WINDOWS windows each, else no interval (too few windows to see their spread).
WINDOW_BATCHES = 20
MIN_BATCHES = 10
MIN_BATCH_WINDOWS = 2


def batch_values(windows: list[np.ndarray], statistic) -> np.ndarray | None:
    """`statistic` of each batch of consecutive windows: `windows` are per-window arrays in time
    order, a batch's are concatenated before `statistic` sees them. None when there are too few
    windows for MIN_BATCHES batches of MIN_BATCH_WINDOWS."""
    count = min(WINDOW_BATCHES, len(windows) // MIN_BATCH_WINDOWS)
    if count < MIN_BATCHES:
        return None
    cuts = np.array_split(np.arange(len(windows)), count)
    return np.array([statistic(np.concatenate([windows[i] for i in cut])) for cut in cuts])


def batch_ratio(point: float, a: np.ndarray, b: np.ndarray) -> Ratio:
    """The interval of `point` = value(a) / value(b), one run each, from their batch values
    (batch_values): Welch's t on the logs' standard error, centred on log(point)."""
    log_a, log_b = np.log(a), np.log(b)
    var_a, var_b = log_a.var(ddof=1) / len(a), log_b.var(ddof=1) / len(b)
    if var_a + var_b == 0:
        return Ratio(point, point, point, 1, 1, method=BATCH_MEANS)
    # Welch-Satterthwaite degrees of freedom.
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    half = scipy_stats().t.ppf((1 + CONFIDENCE) / 2, df) * math.sqrt(var_a + var_b)
    log_point = math.log(point)
    return Ratio(
        point, math.exp(log_point - half), math.exp(log_point + half), 1, 1, method=BATCH_MEANS
    )


@dataclass(frozen=True)
class Difference:
    """a - b in the unit of its inputs, with its interval and how it was computed."""

    difference: float
    ci_low: float
    ci_high: float
    method: str
    # McNemar's exact two-sided p for a paired difference; None for the other methods.
    p_value: float | None = None

    @property
    def detected(self) -> bool:
        return not self.ci_low <= 0 <= self.ci_high


def wilson(successes: int, trials: int) -> tuple[float, float]:
    interval = scipy_stats().binomtest(successes, trials).proportion_ci(CONFIDENCE, method="wilson")
    return interval.low, interval.high


def proportion_difference(p_a: float, p_b: float, n_a: int, n_b: int) -> Difference:
    """Newcombe's hybrid score interval of p_a - p_b, accuracies of one run each on test sets of
    n_a and n_b images (rounded to whole images, as they were counted)."""
    k_a, k_b = round(p_a * n_a), round(p_b * n_b)
    p_a, p_b = k_a / n_a, k_b / n_b
    low_a, high_a = wilson(k_a, n_a)
    low_b, high_b = wilson(k_b, n_b)
    d = p_a - p_b
    return Difference(
        d,
        d - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2),
        d + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2),
        f"Newcombe hybrid score interval at {n_a:,} test images",
    )


def paired_accuracy_difference(correct_a: np.ndarray, correct_b: np.ndarray) -> Difference:
    """accuracy(a) - accuracy(b) of two runs scored on the same test images, image by image
    (correct_a[i], correct_b[i]: whether each got image i right). Only the discordant images
    carry information: McNemar's exact test is the binomial test of one kind of discordance
    among them; the interval is Bonett and Price's adjusted Wald interval for paired proportions
    (Psychological Methods 17(1), 2012), clipped to -1..1."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n = len(correct_a)
    if n == 0 or len(correct_b) != n:
        raise ValueError(f"paired results need the same images: {n} vs {len(correct_b)}")
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    discordant = only_a + only_b
    p_value = scipy_stats().binomtest(only_a, discordant).pvalue if discordant else 1.0
    p12, p21 = (only_a + 1) / (n + 2), (only_b + 1) / (n + 2)
    adjusted = p12 - p21
    z = scipy_stats().norm.ppf(0.5 + CONFIDENCE / 2)
    half = z * math.sqrt(max(p12 + p21 - adjusted**2, 0.0) / (n + 2))
    low, high = clipped(adjusted - half, adjusted + half, DIFFERENCE_OF_PROPORTIONS)
    return Difference(
        (only_a - only_b) / n,
        low,
        high,
        f"paired on {n:,} test images: {only_a:,} right only in the first, {only_b:,} only in "
        f"the second; McNemar exact p = {p_value:.2g}",
        p_value,
    )


def mean_difference(a: pd.Series, b: pd.Series) -> Difference:
    """Welch's t interval of mean(a) - mean(b); both need at least two values."""
    a, b = a.dropna().astype(float), b.dropna().astype(float)
    d = float(a.mean() - b.mean())
    if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        low = high = d
    else:
        interval = scipy_stats().ttest_ind(a, b, equal_var=False).confidence_interval(CONFIDENCE)
        low, high = float(interval.low), float(interval.high)
    return Difference(d, low, high, f"Welch t interval over {len(a)} vs {len(b)} repeats")


def accuracy_difference(a: pd.Series, b: pd.Series, test_samples: int | None) -> Difference | None:
    """Difference of test accuracies (0-1): binomial on the test-set size for single runs,
    across repeats otherwise; None when it cannot be computed."""
    a, b = a.dropna().astype(float), b.dropna().astype(float)
    if a.empty or b.empty:
        return None
    if len(a) >= 2 and len(b) >= 2:
        d = mean_difference(a, b)
        low, high = clipped(d.ci_low, d.ci_high, DIFFERENCE_OF_PROPORTIONS)
        return dataclasses.replace(d, ci_low=low, ci_high=high)
    if test_samples:
        return proportion_difference(float(a.mean()), float(b.mean()), test_samples, test_samples)
    return None
