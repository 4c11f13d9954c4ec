"""The report's sections beyond the per-model evidence, each made from one result file beside the
runs: a source names its file and the module that renders it. A section whose file is missing
is left out. A new section is a module of this package with a `section` function and one line
in SOURCES.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from orchestrator.report import (
    analysis,
    debugging,
    deployment,
    devices,
    hardware_floor,
    install_friction,
    parity,
    phases,
    resultset,
)
from orchestrator.report.document import Section
from orchestrator.report.resultset import read_table
from orchestrator.results import schema


@dataclasses.dataclass(frozen=True)
class SectionSource:
    """A section of the report and the result file it is made from (in `directory`)."""

    file: str
    # None: the file holds nothing for this section (telemetry of one device only).
    make: Callable[[Path], Section | None]
    # Another file of the results directory that must be there too (the floor needs the runs).
    needs: str | None = None


def _floor(directory: Path) -> Section:
    # The runs with their steady-state GPU busy, which the regime of each row needs.
    rs = resultset.load(directory, require_runs=False)
    return hardware_floor.section(rs.floor, analysis.per_run(rs, phases.of(rs)))


SOURCES = (
    SectionSource(schema.PARITY_CSV, lambda d: parity.section(pd.read_csv(d / schema.PARITY_CSV))),
    SectionSource(
        schema.DEPLOY_CSV, lambda d: deployment.section(read_table(d, schema.DEPLOY_CSV))
    ),
    SectionSource(schema.FLOOR_CSV, _floor, needs=schema.RUNS_CSV),
    SectionSource(
        schema.TELEMETRY_CSV,
        lambda d: devices.section(
            read_table(d, schema.RUNS_CSV), read_table(d, schema.TELEMETRY_CSV)
        ),
        needs=schema.RUNS_CSV,
    ),
    SectionSource(
        schema.FRICTION_CSV,
        lambda d: install_friction.section(pd.read_csv(d / schema.FRICTION_CSV)),
    ),
    SectionSource(
        schema.DEBUG_CSV, lambda d: debugging.section(debugging.read(d / schema.DEBUG_CSV))
    ),
)


def found(results_dir: Path, friction_dir: Path | None = None) -> list[Section]:
    """The sections whose files are in results_dir (friction.csv: in friction_dir if given)."""
    sections = []
    for source in SOURCES:
        directory = friction_dir if source.file == schema.FRICTION_CSV and friction_dir else None
        directory = directory or results_dir
        if not (directory / source.file).exists():
            continue
        if source.needs and not (results_dir / source.needs).exists():
            continue
        made = source.make(directory)
        if made is not None:
            sections.append(made)
    return sections
