"""orchestrator.report.stats against values computed by hand or published with the method."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.report import analysis, stats

# Student's t quantiles at 0.975, from printed tables.
T_975 = {1: 12.706204736174698, 2: 4.302652729911275, 4: 2.7764451051977987}
UNBOUNDED = (-math.inf, math.inf)


def test_a_summary_is_the_mean_with_its_t_interval_and_coefficient_of_variation():
    s = stats.summarise(pd.Series([1.0, 2.0, 3.0]), UNBOUNDED)
    half = T_975[2] * 1.0 / math.sqrt(3)  # sd of 1, 2, 3 is 1
    assert (s.n, s.mean, s.median, s.std) == (3, 2.0, 2.0, 1.0)
    assert s.ci_low == pytest.approx(2 - half) and s.ci_high == pytest.approx(2 + half)
    assert s.cov == pytest.approx(0.5)


def test_a_summary_interval_keeps_to_what_the_quantity_can_be():
    # Two repeats: t(0.975, 1) = 12.7 makes the unclipped intervals reach below 0 (the report
    # printed "accuracy 9.4 % (-30.3-49.1)" and "time to target 4.02 s (-0.786-8.82)").
    accuracy = stats.summarise(pd.Series([0.05, 0.138]), analysis.PROPORTION)
    half = T_975[1] * pd.Series([0.05, 0.138]).std() / math.sqrt(2)
    assert accuracy.ci_low == 0.0 and accuracy.ci_high == pytest.approx(0.094 + half)
    wide = stats.summarise(pd.Series([0.02, 0.98]), analysis.PROPORTION)
    assert (wide.ci_low, wide.ci_high) == (0.0, 1.0)
    time = stats.summarise(pd.Series([3.4, 4.64]), analysis.NON_NEGATIVE)
    half = T_975[1] * pd.Series([3.4, 4.64]).std() / math.sqrt(2)
    assert time.ci_low == 0.0 and time.ci_high == pytest.approx(4.02 + half)
    assert time.mean == pytest.approx(4.02)  # the point itself is never moved


def test_every_metric_of_the_report_says_what_values_it_can_take():
    for metric in analysis.METRICS:
        low, high = metric.bounds
        assert low == 0 and high > low, metric.column
    assert analysis.BY_COLUMN["final_test_accuracy"].bounds == (0.0, 1.0)
    assert analysis.BY_COLUMN["mean_gpu_util_pct"].bounds == (0.0, 100.0)


def test_a_single_value_has_no_spread_and_no_interval():
    s = stats.summarise(pd.Series([7.0]), UNBOUNDED)
    assert (s.n, s.mean, s.std, s.ci_low, s.ci_high, s.cov) == (1, 7.0, None, None, None, None)


def test_nothing_to_summarise_is_none_not_zero():
    assert stats.summarise(pd.Series([float("nan")]), UNBOUNDED) is None


def test_the_olympic_trim_drops_lowest_and_highest_from_five_values_on():
    assert list(stats.trimmed(pd.Series([5.0, 1.0, 3.0, 2.0, 4.0]))) == [2.0, 3.0, 4.0]
    assert list(stats.trimmed(pd.Series([4.0, 1.0, 3.0, 2.0]))) == [1.0, 2.0, 3.0, 4.0]


def test_equal_sets_keep_only_the_repeats_every_side_has():
    a = pd.DataFrame({"repeat": [0, 1, 2, 3]})
    b = pd.DataFrame({"repeat": [0, 2, 3, 4]})
    out = stats.equal_sets({"a": a, "b": b})
    assert list(out["a"].repeat) == list(out["b"].repeat) == [0, 2, 3]


def test_a_ratio_is_of_geometric_means_with_a_welch_interval_on_logs():
    # log a = 0, ln2, 2 ln2 and log b = -ln2, 0, ln2: difference ln2, equal variances (ln2)^2,
    # so se = ln2 * sqrt(2/3) and Welch's degrees of freedom are exactly 4.
    r = stats.ratio(pd.Series([1.0, 2.0, 4.0]), pd.Series([0.5, 1.0, 2.0]))
    half = T_975[4] * math.log(2) * math.sqrt(2 / 3)
    assert r.ratio == pytest.approx(2.0)
    assert r.ci_low == pytest.approx(math.exp(math.log(2) - half))
    assert r.ci_high == pytest.approx(math.exp(math.log(2) + half))
    assert r.detected is False  # the interval 0.42-9.6 holds 1


def test_a_ratio_of_single_runs_has_no_interval_and_claims_nothing():
    r = stats.ratio(pd.Series([2.0]), pd.Series([1.0]))
    assert (r.ratio, r.ci_low, r.ci_high, r.detected) == (2.0, None, None, None)


def test_wilson_interval_matches_newcombe_1998():
    # Newcombe (1998), Statistics in Medicine 17:857, example 81/263: 0.2553 to 0.3662.
    low, high = stats.wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_difference_of_proportions_matches_newcombe_1998_method_10():
    # Newcombe (1998), Statistics in Medicine 17:873, example 56/70 - 48/80: 0.0524 to 0.3339.
    d = stats.proportion_difference(56 / 70, 48 / 80, 70, 80)
    assert d.difference == pytest.approx(0.2)
    assert (round(d.ci_low, 4), round(d.ci_high, 4)) == (0.0524, 0.3339)
    assert d.detected


def paired(only_a: int, only_b: int, both: int, neither: int = 0) -> tuple:
    """Per-image correctness of two runs on the same images, from the four counts."""
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return np.array(a), np.array(b)


def test_a_paired_accuracy_difference_matches_agresti_and_mcnemars_exact_test():
    # Agresti, Categorical Data Analysis (2002) 10.1.1: 1,600 people asked twice, 150 approve
    # then not, 86 the reverse: difference 0.04, Wald interval 0.021 to 0.059 (the adjusted
    # Wald interval agrees at this size).
    d = stats.paired_accuracy_difference(*paired(150, 86, 794, 570))
    assert d.difference == pytest.approx(0.04)
    assert (round(d.ci_low, 3), round(d.ci_high, 3)) == (0.021, 0.059)
    assert d.detected and d.p_value < 1e-4
    # 10 against 2 discordant images: two-sided exact p = 2 (1 + 12 + 66) / 2^12.
    small = stats.paired_accuracy_difference(*paired(10, 2, 88))
    assert small.p_value == pytest.approx(2 * 79 / 4096)
    assert "McNemar exact p = 0.039" in small.method


def test_pairing_sees_a_difference_that_independent_samples_cannot():
    # Two runs that agree on all but 12 of 10,000 images, 11 of them in the first's favour: the
    # same accuracies (0.9011 vs 0.9001) read as independent samples hold no difference.
    a, b = paired(11, 1, 9000, 988)
    d = stats.paired_accuracy_difference(a, b)
    independent = stats.proportion_difference(a.mean(), b.mean(), len(a), len(b))
    assert d.detected and not independent.detected
    assert d.ci_high - d.ci_low < (independent.ci_high - independent.ci_low) / 10


def test_paired_results_need_the_same_images():
    with pytest.raises(ValueError, match="same images: 3 vs 2"):
        stats.paired_accuracy_difference(np.ones(3, bool), np.ones(2, bool))


def test_accuracy_of_single_runs_is_binomial_on_the_test_set_and_of_repeats_welch():
    single = stats.accuracy_difference(pd.Series([0.762]), pd.Series([0.777]), 256)
    assert "Newcombe" in single.method and not single.detected
    repeated = stats.accuracy_difference(
        pd.Series([0.70, 0.71, 0.72]), pd.Series([0.60, 0.61, 0.62]), 10_000
    )
    # Equal sd 0.01 on each side: se = 0.01 * sqrt(2/3), Welch df = 4.
    half = T_975[4] * 0.01 * math.sqrt(2 / 3)
    assert "Welch" in repeated.method
    assert repeated.difference == pytest.approx(0.10)
    assert repeated.ci_low == pytest.approx(0.10 - half)
    assert repeated.ci_high == pytest.approx(0.10 + half)


def test_an_accuracy_difference_over_repeats_keeps_within_minus_one_and_one():
    # Two repeats each, spread wide: Welch's interval is about -2.6..2.6 (±260 points).
    d = stats.accuracy_difference(pd.Series([0.05, 0.9]), pd.Series([0.9, 0.05]), 100)
    assert (d.difference, d.ci_low, d.ci_high) == (0.0, -1.0, 1.0)
    assert "Welch" in d.method and not d.detected
