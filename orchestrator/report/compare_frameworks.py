"""Two result sets that trained different frameworks on the same job (run on different days or
hosts): the framework verdict per model, from the two sets read as one, with the statistics of
the report (analysis.analyse); above it, what differs between the sets that the verdict cannot
tell apart from the framework (data, device, precision, every other knob). Where the jobs are not
the same at all (no model in common, another dataset), it says so and gives no verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from orchestrator.report import build as single
from orchestrator.report.analysis import analyse, name
from orchestrator.report.build import ROOT, knob_values, statistics_block, text
from orchestrator.report.document import Block, Document
from orchestrator.report.resultset import ResultSet
from orchestrator.results import schema

# Knobs of the data the framework verdict cannot tell from the framework.
DATA_KNOBS = ("source", "data_dir", "dataset", "train_limit", "test_limit", "augment")


def different_frameworks(a: ResultSet, b: ResultSet) -> bool:
    """The sets trained no framework in common: their comparison is between frameworks."""
    return not set(a.runs.framework) & set(b.runs.framework)


def _prefixed(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    if "run_id" not in frame or frame.empty:
        return frame
    return frame.assign(run_id=prefix + frame["run_id"].astype(str))


def merged(a: ResultSet, b: ResultSet) -> ResultSet:
    """A and B read as one set: run ids prefixed by the set ("A/", "B/") so that runs of the two
    never mix; each framework's floor from its own set (the machine it ran on)."""
    sides = (("A/", a), ("B/", b))

    def both(attribute: str) -> pd.DataFrame:
        frames = [_prefixed(getattr(rs, attribute), p) for p, rs in sides]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else getattr(a, attribute)

    floors = [rs.floor[rs.floor.framework.isin(set(rs.runs.framework))] for _, rs in sides]
    floors = [f for f in floors if not f.empty]
    return ResultSet(
        path=b.path,
        runs=both("runs"),
        epochs=both("epochs"),
        telemetry=both("telemetry"),
        context={"frameworks": [*a.frameworks, *b.frameworks]},
        settings={p + run: s for p, rs in sides for run, s in rs.settings.items()},
        progress=both("progress"),
        floor=pd.concat(floors, ignore_index=True) if floors else a.floor,
        skipped=[f"{p}{line}" for p, rs in sides for line in rs.skipped],
    )


def _dataset_name(runs: pd.DataFrame) -> set[str]:
    """The datasets a set's runs trained on, by what they are rather than where they lay: the
    name in meta.json where it can be read from here, else the directory's last part."""
    out = set()
    for dataset in runs["dataset"].dropna().astype(str).unique():
        if dataset == "synthetic":
            out.add("synthetic")
            continue
        meta = _meta(dataset)
        out.add(str(meta.get("name")) if meta and meta.get("name") else Path(dataset).name)
    return out


def _meta(dataset: str) -> dict | None:
    for directory in (Path(dataset), ROOT / dataset):
        if (directory / "meta.json").is_file():
            return json.loads((directory / "meta.json").read_text())
    return None


def _checksums(runs: pd.DataFrame) -> set[str] | None:
    """The arrays' sha256 of a set's datasets, where every meta.json is readable from here."""
    sums = set()
    for dataset in runs["dataset"].dropna().astype(str).unique():
        if dataset == "synthetic":
            continue
        meta = _meta(dataset)
        if meta is None:
            return None
        sums |= {e.get("sha256", "?") for e in meta.get("arrays", {}).values()}
    return sums


def _models(rs: ResultSet) -> list[str]:
    return [label for label, _ in rs.groups]


def _values(runs: pd.DataFrame, column: str) -> str:
    return ", ".join(knob_values(runs, column)) or "not recorded"


def _host(rs: ResultSet, key: str) -> str:
    return str((rs.context.get("host") or {}).get(key) or "not recorded")


def refusals(a: ResultSet, b: ResultSet) -> list[str]:
    """Why A and B are not the same job at all: then no verdict is given."""
    out = []
    shared = set(_models(a)) & set(_models(b))
    if not shared:
        out.append(
            f"Not the same job: A trained {', '.join(_models(a))}, B trained "
            f"{', '.join(_models(b))} (model and mode); no model is in both, so there is no "
            "framework verdict to give. Run the same --models and --mode on both."
        )
    names_a, names_b = _dataset_name(a.runs), _dataset_name(b.runs)
    if names_a != names_b:
        out.append(
            f"Not the same data: A trained on {', '.join(sorted(names_a))}, B on "
            f"{', '.join(sorted(names_b))}; speeds and accuracies on different data are no "
            "framework verdict. Run both on the same --dataset."
        )
    return out


def caveats(a: ResultSet, b: ResultSet) -> list[str]:
    """What differs between the sets besides the framework, first what moves the numbers most:
    the data, the device, the precision; then every other knob, by name."""
    out = []
    data = [
        f"{column} (A {text(_values(a.runs, column))}, B {text(_values(b.runs, column))})"
        for column in (*DATA_KNOBS, "train_samples", "test_samples")
        if knob_values(a.runs, column) != knob_values(b.runs, column)
    ]
    sums_a, sums_b = _checksums(a.runs), _checksums(b.runs)
    if sums_a is None or sums_b is None:
        data.append("checksums not comparable here (a meta.json is not readable from this machine)")
    elif sums_a != sums_b:
        data.append("checksums differ (meta.json's sha256 of the arrays)")
    if data:
        out.append(
            "Caveat, data: the sets did not read the same data: "
            + "; ".join(data)
            + ". Part of any difference below may be the data's, not the framework's."
        )
    device = []
    for column in ("device", "device_name", "gpu"):
        if knob_values(a.runs, column) != knob_values(b.runs, column):
            device.append(
                f"{column} (A {text(_values(a.runs, column))}, B {text(_values(b.runs, column))})"
            )
    for key, label in (("cpu_model", "CPU"), ("driver", "GPU driver")):
        if _host(a, key) != _host(b, key):
            device.append(f"{label} (A {text(_host(a, key))}, B {text(_host(b, key))})")
    if device:
        out.append(
            "Caveat, device: the sets ran on different hardware: "
            + "; ".join(device)
            + ". The verdict below compares framework and machine together."
        )
    precision = [
        f"{column} (A {text(_values(a.runs, column))}, B {text(_values(b.runs, column))})"
        for column in ("precision", *schema.SETTINGS_COLUMNS)
        if knob_values(a.runs, column) != knob_values(b.runs, column)
    ]
    if precision:
        out.append(
            "Caveat, precision: the sets computed with different arithmetic: "
            + "; ".join(precision)
            + ". Speeds and accuracies compare the arithmetic as well as the frameworks."
        )
    named = {*DATA_KNOBS, "device", "precision"}
    others = [c for c in differing_knobs(a, b) if c[0] not in named]
    if others:
        out.append(
            "Caveat, job: other knobs differ: "
            + "; ".join(f"{column} (A {va}, B {vb})" for column, va, vb in others)
            + " (see 'What differs between the two sets')."
        )
    return out


def differing_knobs(a: ResultSet, b: ResultSet) -> list[list[str]]:
    """[knob, A's values, B's values] for every knob of schema.KNOB_COLUMNS that differs."""
    rows = []
    for column in schema.KNOB_COLUMNS:
        values_a, values_b = knob_values(a.runs, column), knob_values(b.runs, column)
        if values_a != values_b:
            rows.append(
                [column, text(", ".join(values_a) or "–"), text(", ".join(values_b) or "–")]
            )
    return rows


def build(
    a: ResultSet, b: ResultSet, labels: tuple[str, str], header: list[str], blocks: list[Block]
) -> Document:
    """The framework verdict of A's frameworks against B's, per model both trained, after what
    makes it not the same job (then no verdict) or what it cannot tell from the framework;
    `blocks` (the differences and both sets' headers) go after the evidence."""
    label_a, label_b = labels
    refused = refusals(a, b)
    # First, where a reader looks first: what the verdict is worth.
    verdict = refused + caveats(a, b)
    warnings, implications, evidence = [], [], []
    if not refused:
        together = merged(a, b)
        shared = set(_models(a)) & set(_models(b))
        analyses = [x for x in analyse(together) if x.label in shared]
        for analysis in analyses:
            verdict += analysis.verdict
            implications += analysis.implications
        warnings += single.numerics_warnings(together)
        warnings += [w for x in analyses for w in x.warnings]
        only = sorted((set(_models(a)) | set(_models(b))) - shared)
        if only:
            warnings.append(
                f"Trained in one set only, so left out: {', '.join(only)}; the verdict covers "
                f"{', '.join(sorted(shared))}."
            )
        evidence = [statistics_block(analyses)]
    frameworks_a = " + ".join(name(f) for f in a.frameworks)
    frameworks_b = " + ".join(name(f) for f in b.frameworks)
    intro = Block(
        "How the two sets are compared",
        f"A ({text(label_a)}) trained {frameworks_a}; B ({text(label_b)}) trained "
        f"{frameworks_b}: no framework is in both, so the comparison is between frameworks, "
        "per model and mode both trained, with the statistics of `fwbench report` (the two sets' "
        "runs read as one). What else differs between the sets is listed at the top: the verdict "
        "cannot tell it from the framework.",
        anchor="how",
    )
    return Document(
        title=f"fwbench compare: {frameworks_a} ({label_a}) vs {frameworks_b} ({label_b})",
        header=header,
        verdict=verdict,
        warnings=warnings,
        implications=implications,
        blocks=[intro, *evidence, *blocks],
    )
