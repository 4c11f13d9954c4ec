"""What the report claims from few runs: speed ratios with intervals from a single run's
steady-state windows, a break-even only where the speed difference is shown, one-framework sets
said as such, a job table that never contradicts the resolved settings, and charts that are
readable and titled. Result sets are written by the real ResultsWriter (tests/test_steady.py's
Job); no framework runs, so these belong to the fast tier."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import grpc
from matplotlib.backends.backend_agg import FigureCanvasAgg

from orchestrator import report
from orchestrator.report import charts
from orchestrator.results import journal, schema
from tests.conftest import tiny_spec
from tests.test_steady import Job, rendered, result_set

DATA = Path(__file__).parent / "data" / "report"
# Two epochs of 3,126 steps, a window every PROGRESS_INTERVAL_S: the second epoch's windows are
# steady state (the first is warm-up), enough for an interval by batch means.
PYTORCH = Job("pytorch", step_s=0.0030, window_noise=0.05, noise_seed=1, steps_per_epoch=3126)
TENSORFLOW = Job("tensorflow", step_s=0.0036, window_noise=0.05, noise_seed=2, steps_per_epoch=3126)


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
        # The cell prints two decimals: the true ratio is within the interval as printed, ± its
        # rounding.
        assert low < ratio < high and low - 0.005 <= true_ratio <= high + 0.005, row
        assert high / low < 1.1, row  # 5 % noise per window over ~170 windows: a narrow interval
        assert "(single run)" not in row
    assert "single run: no interval" not in result.verdict[0]
    assert "PyTorch steady-state 1.20× faster (95 % CI 1.17–1.22)" in result.verdict[0]
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
    assert "holds 1" in line
    # 3 s sooner to its first step, and the noisy warm-up windows' excess on top.
    assert re.search(
        r"TensorFlow reaches steady state 3\.\d s sooner \(first step and warm-up: ", line
    )
    assert "training images" not in line


def test_a_break_even_counts_the_first_step_and_the_between_epoch_overhead(tmp_path):
    # PyTorch 3.0 ms a step but 3 s later to its first step and 2 s between epochs (1.0 s per
    # epoch over the two epochs); TensorFlow 4.0 ms, 0.4 s (0.2 s per epoch). Per image of
    # 100,032 an epoch: 0.003/32 + 1.0/100,032 = 103.747 µs against 0.004/32 + 0.2/100,032 =
    # 126.999 µs, so 3 s / 23.2525 µs = 129,018 images; without the overhead it would be 96,000.
    jobs = [
        Job("pytorch", step_s=0.003, first_step_s=9.0, between_epochs_s=2.0, steps_per_epoch=3126),
        Job(
            "tensorflow", step_s=0.004, first_step_s=6.0, between_epochs_s=0.4, steps_per_epoch=3126
        ),
    ]
    _, markdown = rendered(result_set(tmp_path, jobs))
    (line,) = [i for i in implications(markdown) if "jobs shorter" in i]
    assert "jobs shorter than about 129,018 training images" in line
    assert "finish first on TensorFlow, longer ones on PyTorch" in line
    assert "PyTorch 1.00 s per epoch, TensorFlow 0.20 s per epoch" in line


def test_a_warm_up_that_compiles_counts_in_the_time_to_steady_state(tmp_path):
    # As tuned JAX on an H200: sooner to its first step, but epoch 1 compiles the remainder's and
    # the short batch's programs (here a window 40x slow, ~12 s). Counting the first step alone
    # would claim that short jobs finish first on it; the runs' own training times say otherwise.
    jobs = [
        dataclasses.replace(PYTORCH, first_step_s=9.0),
        Job("jax", step_s=0.0036, first_step_s=6.0, steps_per_epoch=3126, stalls={(0, 10): 40.0}),
    ]
    _, markdown = rendered(result_set(tmp_path, jobs))
    (line,) = [i for i in implications(markdown) if "finishes first" in i or "finish first" in i]
    assert "PyTorch reaches steady state no later (first step and warm-up: PyTorch " in line, line
    assert "whatever the job's length" in line


def failed_run_set(tmp_path, job: Job, failed: str) -> Path:
    """`job`'s set with `failed` asked for too, its one run refused by its service."""
    out = result_set(tmp_path, [job])
    context = json.loads((out / schema.CONTEXT_JSON).read_text())
    writer = journal.ResultsWriter.resume(out, journal.read_journal(out / schema.EVENTS_JSONL))
    writer.write_context(context | {"frameworks": [job.framework, failed]})
    run = {**job.run, "run_id": job.run["run_id"].replace(job.framework, failed)}
    run["framework"] = failed
    spec = tiny_spec(job.model, run_id=run["run_id"], mode=job.mode)
    error = "UNAVAILABLE: the service did not start"
    outcome = journal.RunOutcome(error=error, code=grpc.StatusCode.UNAVAILABLE)
    writer.run_begins(run, spec)
    writer.run_finished(run, spec, outcome)
    writer.close()
    return out


def test_a_one_framework_set_says_what_it_shows_and_nothing_about_comparing(tmp_path):
    alone = dataclasses.replace(PYTORCH, settings={"cuda_graph": "whole step", "threads": "16"})
    result, markdown = rendered(result_set(tmp_path, [alone]))
    verdict = result.verdict[0]
    assert verdict.startswith(
        "mobilenet_v2 (tuned): a one-framework set: only PyTorch was asked for, so it compares "
        "no frameworks and shows PyTorch's own figures over 1 run(s): steady state 10,"
    )
    assert "first step 9.0 s after worker start" in verdict
    assert "nothing to compare" not in markdown
    assert "Settings that differ between frameworks" not in markdown
    assert "### Settings (PyTorch, the one framework)" in markdown
    assert "| cuda\\_graph | whole step |" in markdown
    assert "the lower of the frameworks' best" not in markdown
    assert "(PyTorch's best: one framework, so its own, median over repeats)" in markdown


def test_nothing_to_compare_is_said_only_when_another_asked_framework_failed(tmp_path):
    result, _ = rendered(failed_run_set(tmp_path, PYTORCH, "tensorflow"))
    assert result.verdict[0].startswith(
        "mobilenet_v2 (tuned): only PyTorch finished a run (TensorFlow asked for but without a "
        "finished run), so there is nothing to compare;"
    )


def test_the_job_table_shows_knobs_as_the_services_resolved_them(tmp_path):
    # Tuned mode: PyTorch autotunes cuDNN and captures a CUDA graph though the spec leaves
    # cudnn_benchmark and compile off; TensorFlow records how it ran them.
    jobs = [
        dataclasses.replace(
            PYTORCH,
            settings={"cudnn_benchmark": "true", "compile": "eager", "cuda_graph": "whole step"},
        ),
        dataclasses.replace(
            TENSORFLOW,
            settings={
                "cudnn_benchmark": "always (TensorFlow autotunes)",
                "compile": "xla (jit_compile)",
            },
        ),
    ]
    _, markdown = rendered(result_set(tmp_path, jobs))
    job = markdown.split("### The job (runs.csv)")[1].split("###")[0]
    assert (
        "| cudnn_benchmark | False | PyTorch true, TensorFlow always (TensorFlow autotunes) |"
        in job
    )
    assert "| compile | False | PyTorch eager, TensorFlow xla (jit\\_compile) |" in job
    assert "| batch_size | 32 | as asked |" in job
    assert not re.search(r"\| cudnn_benchmark \| False \|\s*$", job, flags=re.MULTILINE)


# Half a line of the charts' 9-point text at their 100 dpi, in pixels.
HALF_LINE_PX = 9 / 72 * 100 / 2


def drawn_figures(monkeypatch) -> list:
    """Every figure the report draws, kept as charts.to_svg saves it."""
    figures = []
    save = charts.to_svg

    def keep(fig, salt, title):
        svg = save(fig, salt, title)
        figures.append(fig)
        return svg

    monkeypatch.setattr(charts, "to_svg", keep)
    return figures


def test_no_legend_covers_the_data_or_an_axis_label_and_every_chart_is_titled(
    tmp_path, monkeypatch
):
    figures = drawn_figures(monkeypatch)
    for name in ("cpu", "gpu"):  # the CPU chart whose legend covered PyTorch's line; start-up
        report.render(DATA / name, tmp_path / name)
    rendered(result_set(tmp_path, [PYTORCH, TENSORFLOW]))
    assert len(figures) >= 10
    for fig in figures:
        # Laid out and drawn as when saved (constrained layout runs at every draw).
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        title = fig.get_suptitle()
        assert title, fig.axes[0].get_title()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                if not ax.get_visible():
                    continue
                assert not box.overlaps(ax.get_window_extent(renderer)), title
                for label in (ax.xaxis.label, ax.yaxis.label):
                    if label.get_text():
                        near = label.get_window_extent(renderer)
                        apart_px = max(
                            near.y0 - box.y1, box.y0 - near.y1, near.x0 - box.x1, box.x0 - near.x1
                        )
                        # Half a line apart at least: a browser's font may be larger.
                        assert apart_px >= HALF_LINE_PX, (title, label.get_text(), apart_px)


def test_every_chart_has_a_title_and_a_text_alternative_in_html_and_markdown(tmp_path):
    result, markdown = rendered(result_set(tmp_path, [PYTORCH, TENSORFLOW]))
    html = result.html_path.read_text()
    svgs = re.findall(r"<svg[^>]*>(?:<title>[^<]+</title>)?", html)
    assert len(svgs) >= 5
    for svg in svgs:
        assert re.search(r'role="img" aria-label="[^"]{20,}"', svg), svg
        assert "<title>" in svg, svg
    charts_in_markdown = re.findall(r"^\*Chart \(in report.html\): .*$", markdown, re.MULTILINE)
    assert len(charts_in_markdown) == len(svgs)
    assert all("Text alternative: " in line for line in charts_in_markdown)
    (throughput,) = [line for line in charts_in_markdown if "Throughput:" in line]
    assert "Steady state (batch / median step): PyTorch 10," in throughput


def test_a_command_line_option_never_breaks_across_lines_in_html(tmp_path):
    result, _ = rendered(result_set(tmp_path, [PYTORCH, TENSORFLOW]))
    html = result.html_path.read_text()
    assert '<code class="option">--repeats</code>' in html
    assert ".option { white-space: nowrap; }" in html
    text = re.sub(r"<svg.*?</svg>|<style>.*?</style>", "", html, flags=re.DOTALL)
    bare = re.findall(r"(?<![\w>-])--[a-z][\w-]*", text)
    assert not bare, bare
