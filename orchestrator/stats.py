"""Summaries of repeated measurements."""

from __future__ import annotations

import math

import pandas as pd

# MLPerf's rule: with at least this many repeats, drop the fastest and slowest before averaging.
TRIM_FROM = 5


def trimmed(values: pd.Series) -> pd.Series:
    values = values.sort_values()
    return values.iloc[1:-1] if len(values) >= TRIM_FROM else values


def summarise(values: pd.Series) -> str:
    """'mean' for one value, 'mean ± std (n=N)' for several; '' when there is none."""
    values = trimmed(values.dropna())
    if values.empty:
        return ""
    mean = values.mean()
    if len(values) == 1:
        return _fmt(mean)
    return f"{_fmt(mean)} ± {_fmt(values.std())} (n={len(values)})"


def _fmt(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    digits = max(0, 3 - math.floor(math.log10(abs(x))))
    return f"{x:,.{min(digits, 4)}f}"
