"""What the report claims from few runs: speed ratios with intervals from a single run's
steady-state windows, a break-even only where the speed difference is shown, one-framework sets
said as such, a job table that never contradicts the resolved settings, and charts that are
readable and titled. Result sets are written by the real ResultsWriter (tests/test_steady.py's
Job); no framework runs, so these belong to the fast tier."""

from __future__ import annotations

import dataclasses
import re

from tests.test_steady import Job, rendered, result_set

# Two epochs of 1,563 steps, a window every 0.25 s: about 170 steady-state windows a run.
PYTORCH = Job("pytorch", step_s=0.0030, window_noise=0.05, noise_seed=1)
TENSORFLOW = Job("tensorflow", step_s=0.0036, window_noise=0.05, noise_seed=2)


def rows_of(markdown: str, label: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith(f"| {label} |")]


def implications(markdown: str) -> list[str]:
    section = markdown.split("### What this means for your job")[1].split("\n## ")[0]
    return [line[2:] for line in section.splitlines() if line.startswith("- ")]


def ratio_interval(row: str) -> tuple[float, float, float]:
    """(ratio, low, high) of a model table row's ratio cell, e.g. '0.833 (0.82–0.85)'."""
    match = re.search(r"\| (\d+\.\d+) \((\d+\.\d+)–(\d+\.\d+)\) \|", row)
    assert match, row
    return tuple(float(g) for g in match.groups())


def test_a_single_runs_speed_ratios_have_an_interval_from_its_steady_state_windows(tmp_path):
    result, markdown = rendered(result_set(tmp_path, [PYTORCH, TENSORFLOW]))
    for label, true_ratio in (
        ("steady-state throughput (batch / median step)", 3.6 / 3.0),
        ("steady-state step, median", 3.0 / 3.6),
        ("steady-state step, 90th percentile", 3.0 / 3.6),
    ):
        (row,) = rows_of(markdown, label)
        ratio, low, high = ratio_interval(row)
        assert low < ratio < high and low <= true_ratio <= high, row
        assert high / low < 1.1, row  # 5 % noise per window over ~170 windows: a narrow interval
        assert "(single run)" not in row
    assert "single run: no interval" not in result.verdict[0]
    assert "PyTorch steady-state 1.21× faster (95 % CI 1.18–1.24)" in result.verdict[0]
    method = markdown.split("## Method")[1]
    assert "batch means" in method and "consecutive windows" in method
    assert "the repeats' values are the units" in method


def test_a_break_even_is_not_claimed_when_the_speed_ratio_interval_holds_one(tmp_path):
    # The case: 1.035× from one run each, windows noisy enough that their p90 could
    # point the other way, TensorFlow first to its first step.
    close = [
        dataclasses.replace(PYTORCH, step_s=0.00310, window_noise=0.3, first_step_s=9.0),
        dataclasses.replace(TENSORFLOW, step_s=0.00300, window_noise=0.3, first_step_s=6.0),
    ]
    _, markdown = rendered(result_set(tmp_path, close))
    (line,) = [i for i in implications(markdown) if "break-even" in i or "finish" in i]
    assert "no break-even can be claimed between PyTorch and TensorFlow" in line
    assert "holds 1" in line and "TensorFlow reaches its first step 3.0 s sooner" in line
    assert "training images" not in line


def test_a_break_even_counts_the_first_step_and_the_between_epoch_overhead(tmp_path):
    # PyTorch 3.0 ms a step but 3 s later to its first step and 2 s between epochs (1.0 s per
    # epoch over the two epochs); TensorFlow 4.0 ms, 0.4 s (0.2 s per epoch). Per image of
    # 50,016 an epoch: 0.003/32 + 1.0/50,016 = 113.744 µs against 0.004/32 + 0.2/50,016 =
    # 128.999 µs, so 3 s / 15.255 µs = 196,655 images; without the overhead it would be 96,000.
    jobs = [
        Job("pytorch", step_s=0.003, first_step_s=9.0, between_epochs_s=2.0),
        Job("tensorflow", step_s=0.004, first_step_s=6.0, between_epochs_s=0.4),
    ]
    _, markdown = rendered(result_set(tmp_path, jobs))
    (line,) = [i for i in implications(markdown) if "jobs shorter" in i]
    assert "jobs shorter than about 196,655 training images" in line
    assert "finish first on TensorFlow, longer ones on PyTorch" in line
    assert "PyTorch 1.00 s per epoch, TensorFlow 0.20 s per epoch" in line
