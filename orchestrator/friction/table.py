"""friction.csv: its rows as a frame, and its table on the terminal (the report's section is
report/install_friction.py's)."""

from __future__ import annotations

import dataclasses

import pandas as pd
from rich.console import Console
from rich.table import Table

from orchestrator.friction.common import Row
from orchestrator.report.install_friction import table


def frame(rows: list[Row]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(r) for r in rows])


def print_table(friction: pd.DataFrame, console: Console) -> None:
    columns, rows = table(friction)
    view = Table(title="install friction", show_lines=False)
    for column in columns:
        view.add_column(column, justify="left" if column == "measure" else "right")
    for row in rows:
        view.add_row(*row)
    console.print(view)
