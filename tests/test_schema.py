"""The result schema (orchestrator/results/schema.py): what the writer writes is what every reader
reads, and a result set of an older fwbench reads as one written today. Fast: no framework runs."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.report import render, resultset
from orchestrator.results import journal, schema
from orchestrator.results.journal import RunOutcome
from tests.conftest import ROOT, tiny_spec

RUN = {"run_id": "mobilenet_v2-pytorch-r0", "framework": "pytorch", "model": "mobilenet_v2"}

# runs.csv and epochs.csv as an fwbench from before `mode`, `num_classes`, the data limits,
# `sample_interval_ms` and `--deploy` wrote them.
OLD_RUNS_CSV = """\
run_id,framework,model,repeat,status,error,epochs,batch_size,seed,device,precision,dataset,\
train_samples,test_samples,device_name,gpu,final_test_accuracy,total_time_s,step_time_median_s
mobilenet_v2-pytorch-r0,pytorch,mobilenet_v2,0,ok,,1,32,0,cpu,fp32,synthetic,256,128,cpu,none,\
0.20,3.6,0.079
mobilenet_v2-tensorflow-r0,tensorflow,mobilenet_v2,0,ok,,1,32,0,cpu,fp32,synthetic,256,128,cpu,\
none,0.22,11.5,0.077
"""
OLD_EPOCHS_CSV = """\
run_id,framework,model,repeat,epoch,train_loss,test_loss,test_accuracy,epoch_time_s
mobilenet_v2-pytorch-r0,pytorch,mobilenet_v2,0,0,2.3,2.2,0.20,1.4
mobilenet_v2-tensorflow-r0,tensorflow,mobilenet_v2,0,0,2.3,2.2,0.22,9.9
"""


def write_run(out: Path, spec: pb.TrainSpec, settings: dict[str, str] | None = None) -> Path:
    """One run of spec with an event of every kind that fills a CSV, as the runner records it;
    settings: RunStarted's."""
    started = pb.RunStarted(
        device_name="cpu", gpu="none", train_samples=64, num_classes=10, settings=settings
    )
    end = pb.RunEnd(epochs_completed=1, status="ok", step_time_median_s=0.08)
    sample = pb.TelemetrySample(t_s=1.0, rss_bytes=2**30, cpu_pct=100.0)
    events = [
        pb.TrainEvent(run_started=started),
        pb.TrainEvent(epoch_end=pb.EpochEnd(epoch=0, train_loss=2.3, test_accuracy=0.2)),
        pb.TrainEvent(telemetry=pb.TelemetryBatch(samples=[sample])),
        pb.TrainEvent(
            deployment=pb.Deployment(results=[pb.DeployResult(format="onnx", status="ok")])
        ),
        pb.TrainEvent(run_end=end),
    ]
    writer = journal.ResultsWriter(out)
    run = RUN | {"repeat": 0}
    writer.run_begins(run, spec)
    for event in events:
        writer.event(run, event)
    writer.run_finished(run, spec, RunOutcome(started=started, end=end))
    writer.close()
    return out


def test_every_csv_is_written_with_the_schemas_columns_and_read_back_as_written(tmp_path):
    out = write_run(tmp_path / "run", tiny_spec(mode="tuned"))
    for table in (schema.RUNS_CSV, schema.EPOCHS_CSV, schema.TELEMETRY_CSV, schema.DEPLOY_CSV):
        written = pd.read_csv(out / table)
        assert list(written.columns) == list(schema.COLUMNS[table]), table
        read = resultset.read_table(out, table)
        assert list(read.columns) == list(schema.COLUMNS[table]), table  # nothing added
    runs = resultset.load(out).runs
    assert runs.loc[0, "mode"] == "tuned" and runs.loc[0, "train_limit"] == 64


def test_runs_csv_has_the_numerics_the_service_resolved_and_a_rebuild_keeps_them(tmp_path):
    settings = {
        "precision": "native",
        "tf32_matmul": "false",
        "tf32_conv": "true",
        "threads": "16",
    }
    out = write_run(tmp_path / "run", tiny_spec(), settings)
    journal.rebuild(journal.read_journal(out / schema.EVENTS_JSONL), tmp_path / "rebuilt")
    for results in (out, tmp_path / "rebuilt"):
        [run] = resultset.read_table(results, schema.RUNS_CSV).to_dict("records")
        assert (run["precision"], run["tf32_matmul"], run["tf32_conv"]) == (
            "native",
            "false",
            "true",
        )
        assert "threads" not in run  # the other settings stay in events.jsonl


def test_an_old_result_set_without_mode_reads_as_default(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / schema.RUNS_CSV).write_text(OLD_RUNS_CSV)
    (out / schema.EPOCHS_CSV).write_text(OLD_EPOCHS_CSV)

    rs = resultset.load(out)
    assert list(rs.runs["mode"]) == ["default", "default"]
    # Every column of today is there; what the old fwbench did not record is empty, never 0.
    assert set(schema.RUN_COLUMNS) <= set(rs.runs.columns)
    for column in ("train_limit", "num_classes", "sample_interval_ms", "deploy_enabled"):
        assert rs.runs[column].isna().all(), column
    assert set(schema.EPOCH_COLUMNS) <= set(rs.epochs.columns)
    assert rs.epochs["train_accuracy"].isna().all()
    assert [label for label, _ in rs.groups] == ["mobilenet_v2 (default)"]

    markdown = render(out).markdown_path.read_text()
    assert "## mobilenet_v2 (default)" in markdown
    job = markdown.split("### The job (runs.csv)")[1].split("###")[0]
    assert (
        "| batch_size | 32 | as asked |" in job and "train_limit" not in job
    )  # not recorded: not shown


def test_training_epochs_from_before_the_baseline_are_numbered_from_1_in_csv_and_journal(tmp_path):
    # An old set: no baseline, its one training epoch numbered 0 in epochs.csv and the journal.
    out = tmp_path / "old"
    out.mkdir()
    (out / schema.EPOCHS_CSV).write_text(OLD_EPOCHS_CSV)
    (out / schema.RUNS_CSV).write_text(OLD_RUNS_CSV)
    epochs = resultset.load(out).epochs
    assert list(epochs.epoch) == [1, 1] and not epochs.before_training.any()
    old = write_run(tmp_path / "journal", tiny_spec())  # EpochEnd epoch 0, no baseline
    rebuilt = tmp_path / "rebuilt"
    journal.rebuild(journal.read_journal(old / schema.EVENTS_JSONL), rebuilt)
    assert list(pd.read_csv(rebuilt / schema.EPOCHS_CSV).epoch) == [1]
    assert list(pd.read_csv(old / schema.EPOCHS_CSV).epoch) == [1]  # as written live


def test_a_journal_from_before_mode_replays_as_default(tmp_path):
    # An old journal's spec has no mode, so `fwbench report` rebuilds runs.csv with it empty.
    spec = tiny_spec()
    spec.ClearField("mode")
    out = write_run(tmp_path / "old", spec)
    rebuilt = tmp_path / "rebuilt"
    journal.rebuild(journal.read_journal(out / schema.EVENTS_JSONL), rebuilt)
    assert pd.read_csv(rebuilt / schema.RUNS_CSV)["mode"].isna().all()
    assert list(resultset.load(rebuilt).runs["mode"]) == ["default"]


def test_docs_results_md_describes_every_column_of_a_run():
    # A field added to the proto is a column by itself; its meaning and unit need a line here.
    docs = (ROOT / "docs" / "results.md").read_text()
    for table in (schema.RUNS_CSV, schema.EPOCHS_CSV, schema.TELEMETRY_CSV, schema.DEPLOY_CSV):
        section = docs.split(f"\n## {table}\n")[1].split("\n## ")[0]
        assert [c for c in schema.COLUMNS[table] if f"`{c}`" not in section] == [], table


def test_every_file_name_of_the_schema_is_a_file_of_the_result_set():
    # What `fwbench report DIR --out DIR2` carries: a file named here and left out of FILES
    # would vanish from DIR2's report.
    names = {
        value
        for key, value in vars(schema).items()
        if key.isupper() and isinstance(value, str) and re.fullmatch(r"\w+\.\w+", value)
    }
    assert names == set(schema.FILES)
