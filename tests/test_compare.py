"""compare(): ratio tables between two canned result sets (tests/data/report/)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator import report
from orchestrator.report import resultset
from orchestrator.results import schema

DATA = Path(__file__).parent / "data" / "report"


@pytest.fixture
def sets(tmp_path):
    a, b = tmp_path / "gpu", tmp_path / "gpu-tuned"
    shutil.copytree(DATA / "gpu", a)
    shutil.copytree(DATA / "gpu-tuned", b)
    return a, b


def test_compare_gives_ratios_b_over_a_labelled_by_folder(sets):
    a, b = sets
    result = report.compare(a, b)
    # gpu-tuned: PyTorch's steps are half as long, TensorFlow's unchanged.
    assert result.verdict == [
        "resnet50 (default), PyTorch: gpu-tuned steady-state 2.00× faster "
        "(gpu-tuned/gpu 2.00, 95 % CI 1.96–2.04).",
        "resnet50 (default), TensorFlow: steady-state: no difference detected "
        "(gpu-tuned/gpu 1.00×, 95 % CI 0.98–1.02).",
    ]
    markdown = result.markdown_path.read_text()
    assert markdown.startswith("# fwbench compare: gpu (A) vs gpu-tuned (B)")
    # 5 repeats finished in both frameworks of each set; the olympic trim keeps 3.
    row = "| resnet50 (default) | PyTorch | steady-state step, median | 0.500 | 0.49–0.51 | 3 | 3 |"
    assert row in markdown
    assert "## A: gpu" in markdown and "## B: gpu-tuned" in markdown


def test_compare_writes_into_b_by_default_and_nowhere_else(sets, tmp_path):
    a, b = sets
    before_a = sorted(p.name for p in a.iterdir())
    result = report.compare(a, b)
    assert (result.markdown_path, result.html_path) == (b / "compare.md", b / "compare.html")
    assert sorted(p.name for p in a.iterdir()) == before_a
    elsewhere = report.compare(a, b, tmp_path / "out")
    assert elsewhere.html_path == tmp_path / "out" / "compare.html"
    html = elsewhere.html_path.read_text()
    assert "://" not in html and "<svg" in html


def test_sets_with_the_same_folder_name_are_told_apart_by_their_parent(tmp_path):
    for machine in ("h100", "h200"):
        shutil.copytree(DATA / "gpu", tmp_path / machine / "seed")
    result = report.compare(tmp_path / "h100" / "seed", tmp_path / "h200" / "seed")
    assert result.verdict[0].startswith(
        "resnet50 (default), PyTorch: steady-state: no difference detected "
        "(h200/seed/h100/seed 1.00×"
    )


def test_the_accuracy_difference_is_in_points_with_its_interval(sets):
    a, b = sets
    markdown = report.compare(a, b).markdown_path.read_text()
    line = next(x for x in markdown.splitlines() if x.startswith("- resnet50 (default), PyTorch"))
    assert "accuracy gpu-tuned 66.0 % vs gpu 66.0 %: no difference detected (+0.0 points" in line
    assert "Welch t interval over 3 vs 3 repeats" in line


def test_sets_with_nothing_in_common_say_so(tmp_path):
    result = report.compare(DATA / "gpu", DATA / "three", tmp_path)
    assert result.verdict == [
        "gpu and three share no model and framework with a finished run: nothing to compare."
    ]


def test_sets_of_different_modes_pair_by_model(sets):
    # `fwbench compare default/ tuned/`: each set has one mode, so its labels carry it.
    a, b = sets
    for directory, mode in ((a, "default"), (b, "tuned")):
        runs = pd.read_csv(directory / "runs.csv")
        runs["mode"] = mode
        runs.to_csv(directory / "runs.csv", index=False)
    result = report.compare(a, b)
    assert result.verdict[0].startswith("resnet50 (default), PyTorch: gpu-tuned steady-state 2.00×")


def _other_than(values: pd.Series) -> object:
    """A value of the same kind that differs from every one in values (1 where none is known)."""
    known = values.dropna()
    if known.empty:
        return 1
    value = known.iloc[0]
    if isinstance(value, bool | np.bool_):
        return not value
    if isinstance(value, int | float | np.number):
        return value + 1
    return f"{value}, changed"


def test_compare_names_every_recorded_knob_that_differs(sets):
    a, b = sets
    runs_a = resultset.load(a).runs
    runs_b = pd.read_csv(b / schema.RUNS_CSV)
    for column in schema.KNOB_COLUMNS:
        runs_b[column] = _other_than(runs_a[column])
    runs_b.to_csv(b / schema.RUNS_CSV, index=False)
    markdown = report.compare(a, b).markdown_path.read_text()
    differs = markdown.split("## What differs between the two sets")[1].split("\n## ")[0]
    named = re.findall(r"^\| (\w+) +\|", differs, flags=re.MULTILINE)
    assert named[0] == "knob" and named[1:] == list(schema.KNOB_COLUMNS)
    # The gpu sets come from an fwbench that recorded no data limits: "–" is "not recorded".
    assert re.search(r"^\| train_limit +\| – +\| 1 +\|$", differs, flags=re.MULTILINE)


def test_compare_names_no_knob_where_the_sets_agree(sets):
    markdown = report.compare(*sets).markdown_path.read_text()
    assert "Every knob recorded in runs.csv is equal" in markdown


def test_sets_on_different_devices_give_the_scaling_efficiency_with_its_interval(sets):
    # B on 2 devices: PyTorch's throughput doubles (perfect scaling), TensorFlow's stays (half).
    a, b = sets
    runs = pd.read_csv(b / schema.RUNS_CSV)
    runs["gpus"] = 2
    runs.to_csv(b / schema.RUNS_CSV, index=False)
    result = report.compare(a, b)
    assert (
        "resnet50 (default), PyTorch: scaling efficiency 1.00 from 1 to 2 devices "
        "(95 % CI 0.98–1.02)." in result.verdict
    )
    assert (
        "resnet50 (default), TensorFlow: scaling efficiency 0.50 from 1 to 2 devices "
        "(95 % CI 0.49–0.51)." in result.verdict
    )
    markdown = result.markdown_path.read_text()
    assert "## Scaling over devices" in markdown
    assert "| resnet50 (default) | TensorFlow | 1 | 2 | 0.500 | 0.49–0.51 |" in markdown


def test_sets_on_the_same_devices_have_no_scaling_section(sets):
    assert "Scaling over devices" not in report.compare(*sets).markdown_path.read_text()
