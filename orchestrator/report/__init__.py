"""The report of a result set, and the comparison of two result sets.

    render(results_dir, out_dir=None, friction_dir=None) -> Report    report.md + report.html
    compare(dir_a, dir_b, out_dir=None) -> Report               compare.md + compare.html
    sweep(dirs, out_dir) -> Report                             sweep.md + sweep.html

Besides the per-model evidence, the report has a section for each other result file found in the
directory (parity.csv, deploy.csv, floor.csv, friction.csv, debug.csv): sections.SOURCES says
which file feeds which section, each rendered by a module of this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.report import batch_sweep, build, compare_sets, document, resultset
from orchestrator.report.document import Section
from orchestrator.report.resultset import ResultSetError
from orchestrator.report.sections import found as found_sections
from orchestrator.results import schema

__all__ = ["Report", "ResultSetError", "Section", "compare", "render", "sweep"]


@dataclass(frozen=True)
class Report:
    markdown_path: Path
    html_path: Path
    # One verdict sentence per model, then the warnings: what a console summary prints.
    verdict: list[str]


def render(
    results_dir: Path,
    out_dir: Path | None = None,
    friction_dir: Path | None = None,
    sections: Sequence[Section] = (),
) -> Report:
    """Reads results_dir's CSV files, context.json and events.jsonl; writes report.md and
    report.html into out_dir (default results_dir) and nowhere else, with a section for every
    other result file found (friction.csv from friction_dir when given). A directory without
    training runs is reported only when it has such a section (e.g. install friction alone).
    `sections` are added after those found (tests; the commands pass none)."""
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    extra = [*found_sections(results_dir, Path(friction_dir) if friction_dir else None), *sections]
    results = resultset.load(results_dir, require_runs=not extra)
    doc = build.build(results, out_dir, extra)
    md_path, html_path = document.write(doc, out_dir, schema.REPORT)
    return Report(md_path, html_path, doc.verdict + doc.warnings)


def compare(dir_a: Path, dir_b: Path, out_dir: Path | None = None) -> Report:
    """Ratio tables B / A between two result sets (two versions, two machines, default vs tuned),
    labelled by folder name; writes compare.md and compare.html into out_dir (default dir_b)."""
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    out_dir = Path(out_dir) if out_dir is not None else dir_b
    doc = compare_sets.build(resultset.load(dir_a), resultset.load(dir_b), out_dir)
    md_path, html_path = document.write(doc, out_dir, schema.COMPARE)
    return Report(md_path, html_path, doc.verdict + doc.warnings)


def sweep(dirs: Sequence[Path], out_dir: Path) -> Report:
    """Throughput and GPU utilisation against batch size over result sets alike but for the
    batch size (one per batch, as suites/batch-sweep/ writes them); writes sweep.md and
    sweep.html into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = batch_sweep.build([resultset.load(Path(d)) for d in dirs], out_dir)
    md_path, html_path = document.write(doc, out_dir, schema.SWEEP)
    return Report(md_path, html_path, doc.verdict + doc.warnings)
