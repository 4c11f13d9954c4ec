"""friction.csv (`fwbench friction`) as the report's Install friction section, and the same
table for the terminal (friction/table.py prints it)."""

from __future__ import annotations

import math

import pandas as pd

from orchestrator.report.document import Section

GIB = 1024**3

DISPLAY = (
    ("build_s", "environment build, s", 1, "{:.1f}"),
    ("engine", "container engine", None, "{}"),
    ("build_warm_s", "image rebuild, cached, s", 1, "{:.1f}"),
    ("image_size_bytes", "image size, GiB", 1 / GIB, "{:.2f}"),
    ("image_layers", "image layers holding files", 1, "{:.0f}"),
    ("largest_layer_bytes", "largest layer, GiB", 1 / GIB, "{:.2f}"),
    ("downloaded_bytes", "downloaded by pip, GiB", 1 / GIB, "{:.2f}"),
    ("up_to_serving_s", "container start to SERVING, s", 1, "{:.2f}"),
    ("env_size_bytes", "environment on disk, GiB", 1 / GIB, "{:.2f}"),
    ("distributions", "distributions installed", 1, "{:.0f}"),
    ("installed_bytes", "installed by distributions, GiB", 1 / GIB, "{:.2f}"),
    ("nvidia_cuda_bytes", "NVIDIA/CUDA libraries, GiB", 1 / GIB, "{:.2f}"),
    ("cuda_majors", "CUDA majors installed", None, "{}"),
    ("image_cuda_majors", "CUDA majors in the GPU image", None, "{}"),
    ("image_resolves", "GPU image requirements resolve", None, "{}"),
    ("image_duplicated", "GPU image: libraries for two CUDA majors", 1, "{:.0f}"),
    ("image_downgraded", "GPU images together: downgraded", 1, "{:.0f}"),
    ("protobuf_version", "protobuf installed", None, "{}"),
    ("protobuf_accepted", "protobuf the framework accepts", None, "{}"),
    ("import_cold_s", "import, cold, s", 1, "{:.2f}"),
    ("import_warm_s", "import, warm (median), s", 1, "{:.2f}"),
    ("time_to_first_step_s", "time to first step, s", 1, "{:.1f}"),
    ("code_lines", "code lines (trainer + models)", 1, "{:.0f}"),
    ("friction_comments", "`# friction:` workarounds", 1, "{:.0f}"),
    ("resolves", "pip resolves", None, "{}"),
    ("pip_check", "pip check", None, "{}"),
    ("downgraded", "downgraded vs own venv", 1, "{:.0f}"),
    ("duplicated", "duplicated libraries", 1, "{:.0f}"),
    ("one_process", "one process: imports + a step", None, "{}"),
)


# Measures whose detail the report spells out under the table.
EXPLAINED = (
    "resolves",
    "pip_check",
    "downgraded",
    "duplicated",
    "image_duplicated",
    "image_downgraded",
)


def table(friction: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(columns, rows) of the side-by-side view: one row per measure (`measure[model]` and
    `one_process[order]` once per model and order), one column per framework and the shared
    environment."""
    frameworks = list(dict.fromkeys(friction["framework"]))
    values = {(r.framework, r.measure): r.value for r in friction.itertuples()}
    out = []
    for prefix, label, scale, fmt in DISPLAY:
        measures = [m for m in friction["measure"] if m == prefix or m.startswith(prefix + "[")]
        for measure in dict.fromkeys(measures):
            name = label + (f" · {measure[len(prefix) + 1 : -1]}" if measure != prefix else "")
            cells = [
                _cell(values[(f, measure)], scale, fmt) if (f, measure) in values else ""
                for f in frameworks
            ]
            out.append([name, *cells])
    return ["measure", *frameworks], out


def _cell(value, scale, fmt: str) -> str:
    if scale is None:
        return {"True": "yes", "False": "no"}.get(str(value), str(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "—" if math.isnan(number) else fmt.format(number * scale)


def section(friction: pd.DataFrame) -> Section:
    """The report's section: the table, then the shared-environment findings in words."""
    columns, rows = table(friction)
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines.append("")
    notes = friction[
        friction["measure"].isin(EXPLAINED) | friction["measure"].str.startswith("one_process")
    ]
    for row in notes.itertuples():
        if isinstance(row.detail, str) and row.detail:
            lines.append(f"- {row.framework} · {row.measure}: {row.value} — {row.detail}")
    lines += [
        "",
        "Builds use a cold pip cache of their own and this machine's package indexes; import "
        "times exclude interpreter start-up; time to first step is a fresh worker process "
        "(import + data + model build + first step) on tiny synthetic data. Code lines count "
        "neither blank lines, comments nor docstrings.",
    ]
    return Section("Install friction", "\n".join(lines))
