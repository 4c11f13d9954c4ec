"""The journal (events.jsonl) and what is rebuilt from it: `fwbench report DIR [--out DIR2]` and
`fwbench run --resume` lose no run that finished, refuse a journal they cannot rebuild from before
they change anything, and name every malformed line by its number. Journals written by the real
ResultsWriter (tests/test_schema.write_run), cut or edited as a crash or a person leaves them;
the real command line, in this process. Fast: no framework runs (test_interruptions.py has the
same on a real run's journal)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from google.protobuf import json_format

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import cli
from orchestrator.commands.debug_probe import DebugWriter
from orchestrator.report import render
from orchestrator.results import journal, schema
from orchestrator.running import parity_check
from tests.conftest import tiny_spec
from tests.test_floor import floor_row
from tests.test_schema import RUN, write_run

CANNED_GPU = Path(__file__).parent / "data" / "report" / "gpu"  # a journal without run specs
# What names the run in each of its event lines.
EVENT_KEYS = {"run_id": RUN["run_id"], "framework": RUN["framework"]}


def fwbench(capsys, *argv) -> tuple[int, str]:
    """`fwbench ARGV` in this process: its exit code and what it printed, on one line."""
    with pytest.raises(SystemExit) as exited:
        cli.main([str(a) for a in argv])
    return exited.value.code, " ".join(capsys.readouterr().out.split())


def lines(out: Path) -> list[str]:
    return (out / schema.EVENTS_JSONL).read_text().splitlines(keepends=True)


def killed_after_run_end(out: Path) -> Path:
    """The result set as a kill -9 leaves it right after the run's RunEnd was journaled: no
    outcome line, no runs.csv yet."""
    kept = lines(out)
    last_end = max(i for i, line in enumerate(kept) if '"run_end"' in line)
    (out / schema.EVENTS_JSONL).write_text("".join(kept[: last_end + 1]))
    (out / schema.RUNS_CSV).unlink()
    return out


def contents(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_report_keeps_a_run_whose_run_end_was_journaled_though_its_outcome_line_was_not(
    tmp_path, capsys
):
    out = killed_after_run_end(write_run(tmp_path / "run", tiny_spec()))
    code, output = fwbench(capsys, "report", out)
    assert code == 0, output
    runs = pd.read_csv(out / schema.RUNS_CSV)
    assert list(runs["status"]) == ["ok"] and runs["error"].isna().all()
    assert runs.loc[0, "step_time_median_s"] == 0.08  # RunEnd's measurements, not an empty row
    assert runs.loc[0, "device_name"] == "cpu"  # and RunStarted's
    assert "no run finished" not in output
    # The rebuilt journal now ends the run, so it reads the same the next time.
    assert json.loads(lines(out)[-1])["outcome"] == {"status": "ok", "error": ""}


def test_resume_keeps_a_run_whose_run_end_was_journaled_and_runs_it_no_more(tmp_path):
    out = killed_after_run_end(write_run(tmp_path / "run", tiny_spec()))
    writer = journal.ResultsWriter.resume(out, journal.read_journal(out / schema.EVENTS_JSONL))
    writer.close()
    assert [(row["run_id"], row["status"]) for row in writer.rows] == [(RUN["run_id"], "ok")]


def test_a_diverged_run_end_without_its_outcome_line_is_rebuilt_as_diverged(tmp_path, capsys):
    out = write_run(tmp_path / "run", tiny_spec())
    text = (out / schema.EVENTS_JSONL).read_text()
    (out / schema.EVENTS_JSONL).write_text(
        text.replace('"status": "ok"}}', '"status": "diverged"}}')
    )
    killed_after_run_end(out)
    code, output = fwbench(capsys, "report", out)
    assert code == 0, output
    assert list(pd.read_csv(out / schema.RUNS_CSV)["status"]) == ["diverged"]


def test_a_last_line_cut_short_by_a_crash_is_skipped_with_a_warning_naming_it(tmp_path, capsys):
    out = write_run(tmp_path / "run", tiny_spec())
    kept = lines(out)
    # kill -9 while the outcome line was written: half of it is on disk, no newline.
    (out / schema.EVENTS_JSONL).write_text("".join(kept[:-1]) + kept[-1][:25])
    code, output = fwbench(capsys, "report", out)
    assert code == 0, output
    assert f"{out / schema.EVENTS_JSONL} line {len(kept)}: cut short" in output
    assert "skipped" in output
    assert list(pd.read_csv(out / schema.RUNS_CSV)["status"]) == ["ok"]  # its RunEnd is there


# Lines a journal must not hold, put in as its third line (after the spec and RunStarted), and
# what the refusal says of each.
MALFORMED = {
    "not JSON": ('{"run_id": "x", "framework": ', "line 3: not JSON"),
    "not an object": ("[1, 2]", "line 3: not a JSON object but a list"),
    "no run id": ('{"framework": "pytorch", "t_s": 1.0}', "line 3: no run_id"),
    "a run id of the wrong type": (
        '{"run_id": 7, "framework": "pytorch", "t_s": 1.0}',
        "line 3: run_id is 7, not a name",
    ),
    "a field of the wrong type": (
        json.dumps(EVENT_KEYS | {"epoch_end": {"epoch": "first"}}),
        "line 3: epoch_end: Failed to parse epoch field",
    ),
    "an outcome status of the wrong type": (
        json.dumps(EVENT_KEYS | {"outcome": {"status": 0, "error": ""}}),
        "line 3: outcome status is 0, not a word",
    ),
    "a repeat of the wrong type": (
        json.dumps(RUN | {"repeat": "0", "spec": {}}),
        'line 3: repeat is "0", not a count',
    ),
    "an event of a run no spec began": (
        json.dumps(EVENT_KEYS | {"run_id": "other-pytorch-r0", "t_s": 1.0}),
        "line 3: an event of run other-pytorch-r0, which no line before it begins",
    ),
}


@pytest.mark.parametrize(("bad", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_line_is_named_by_its_number_and_nothing_is_replaced(
    tmp_path, capsys, bad, message
):
    out = write_run(tmp_path / "run", tiny_spec())
    kept = lines(out)
    (out / schema.EVENTS_JSONL).write_text("".join([*kept[:2], bad + "\n", *kept[2:]]))
    before = contents(out)
    code, output = fwbench(capsys, "report", out)
    assert code == 2, output
    assert f"{out / schema.EVENTS_JSONL}" in output and message in output
    assert "nothing was changed" in output
    assert contents(out) == before  # every file as it was, the journal too

    copy = tmp_path / "copy"
    code, output = fwbench(capsys, "report", out, "--out", copy)
    assert code == 2 and message in output, output
    assert not copy.exists() or not any(copy.iterdir())


def test_a_journal_whose_only_spec_line_is_malformed_is_refused_not_taken_for_an_older_one(
    tmp_path, capsys
):
    out = write_run(tmp_path / "run", tiny_spec())
    kept = lines(out)
    spec_line = kept[0].replace('"repeat": 0', '"repeat": true')
    (out / schema.EVENTS_JSONL).write_text("".join([spec_line, *kept[1:]]))
    before = contents(out)
    code, output = fwbench(capsys, "report", out)
    assert code == 2, output
    assert "line 1: repeat is true, not a count" in output and "nothing was changed" in output
    assert contents(out) == before


def test_an_event_after_its_runs_outcome_is_named(tmp_path):
    out = write_run(tmp_path / "run", tiny_spec())
    ended = len(lines(out))
    with open(out / schema.EVENTS_JSONL, "a") as events:
        events.write(json.dumps(EVENT_KEYS | {"t_s": 9.0}) + "\n")
    with pytest.raises(journal.JournalError, match=re.escape(
        f"line {ended + 1}: an event of run {RUN['run_id']}, which line {ended} already ended"
    )):  # fmt: skip
        journal.read_journal(out / schema.EVENTS_JSONL).check()


def test_resume_refuses_a_malformed_journal_before_anything_starts(tmp_path, capsys):
    out = write_run(tmp_path / "run", tiny_spec())
    (out / schema.EVENTS_JSONL).write_text("".join([*lines(out)[:2], "{oops\n", *lines(out)[2:]]))
    spec = json_format.MessageToDict(tiny_spec(), preserving_proto_field_name=True)
    context = {"spec": spec, "frameworks": ["pytorch"], "models": ["mobilenet_v2"], "repeats": 1}
    (out / schema.CONTEXT_JSON).write_text(json.dumps(context))
    before = contents(out)
    code, output = fwbench(capsys, "run", "--resume", out)
    assert code == 2, output
    assert "line 3: not JSON" in output and "nothing was changed" in output
    assert contents(out) == before
    assert not (out / "logs").exists()  # no service was started


def test_report_of_a_journal_without_run_specs_keeps_the_csvs_and_reports_them(tmp_path, capsys):
    out = tmp_path / "gpu"
    shutil.copytree(CANNED_GPU, out)
    before = contents(out)
    code, output = fwbench(capsys, "report", out)
    assert code == 0, output
    assert "holds no run's spec" in output and "kept as they are" in output
    after = contents(out)
    assert {name: after[name] for name in before} == before
    assert "## resnet50 (default)" in (out / "report.md").read_text()

    copy = tmp_path / "copy"
    code, output = fwbench(capsys, "report", out, "--out", copy)
    assert code == 0, output
    for name in before:
        assert (copy / name).read_bytes() == before[name], name


def test_the_report_of_a_journal_with_a_cut_line_warns_of_it(tmp_path):
    # `fwbench compare` and `sweep` read a killed run's journal as it is, unrebuilt.
    out = tmp_path / "gpu"
    shutil.copytree(CANNED_GPU, out)
    events = out / schema.EVENTS_JSONL
    text = events.read_text()
    events.write_text(text + text.splitlines()[0][:40])
    markdown = render(out).markdown_path.read_text()
    assert f"events.jsonl line {len(text.splitlines()) + 1}: cut short" in markdown
    assert "Settings equal in every framework" in markdown  # the whole lines are read


def every_file_of_a_set(out: Path, data_dir: Path) -> Path:
    """A result set with every file of schema.FILES, each holding something its report shows."""
    spec = tiny_spec()
    spec.data.source, spec.data.data_dir = "directory", str(data_dir)
    write_run(out, spec)  # events.jsonl, runs, epochs, telemetry, deploy
    data_dir.mkdir()
    meta = {"name": "tiny", "arrays": {"train_images": {"sha256": "ab" * 32}}}
    (data_dir / "meta.json").write_text(json.dumps(meta))
    (out / schema.CONTEXT_JSON).write_text(json.dumps({"command": "fwbench run …"}))
    report = pb.ModelReport(framework="pytorch", model="mobilenet_v2", total_params=2_236_682)
    parity = parity_check.ModelParity(
        model="mobilenet_v2", architecture="canonical", init="shared",
        reports={"pytorch": report}, counts_equal=True, max_abs_logit_diff=0.0,
        max_rel_logit_diff=0.0, max_abs_loss_diff=None, differences={},
    )  # fmt: skip
    parity_check.write_csv([parity], out)
    DebugWriter(out).add(pb.ProbeResult(framework="pytorch", probe="none", outcome="ok"))
    floor = floor_row(framework="pytorch", model="mobilenet_v2", device_name="cpu")
    pd.DataFrame([floor]).to_csv(out / schema.FLOOR_CSV, index=False)
    friction = {"framework": "pytorch", "measure": "build_s", "value": 12.5, "detail": ""}
    pd.DataFrame([friction]).to_csv(out / schema.FRICTION_CSV, index=False)
    (out / schema.SUITE_YAML).write_text("name: tiny\n")
    assert sorted(p.name for p in out.iterdir()) == sorted(schema.FILES)
    return out


def test_report_out_carries_every_file_of_the_set_and_writes_the_same_report(tmp_path, capsys):
    source = every_file_of_a_set(tmp_path / "run", tmp_path / "data")
    code, output = fwbench(capsys, "report", source)
    assert code == 0, output
    here = (source / "report.md").read_text()
    for heading in ("Model parity", "Deployment", "Against the hardware floor"):
        assert f"## {heading}" in here, heading
    assert "train\\_images `abababababababab…`" in here  # the dataset's checksums
    copy = tmp_path / "copy"  # beside the source: the same relative links
    code, output = fwbench(capsys, "report", source, "--out", copy)
    assert code == 0, output
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in source.iterdir())
    assert (copy / "report.md").read_text() == here
    for name in set(schema.FILES) - set(journal.JOURNALED_FILES):
        assert (copy / name).read_bytes() == (source / name).read_bytes(), name


def test_report_out_refuses_a_directory_that_holds_any_file_of_a_set(tmp_path, capsys):
    source = write_run(tmp_path / "run", tiny_spec())
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / schema.FLOOR_CSV).write_text("framework\n")
    code, output = fwbench(capsys, "report", source, "--out", copy)
    assert code == 2, output
    assert f"{copy} already holds results (floor.csv)" in output
    assert [p.name for p in copy.iterdir()] == [schema.FLOOR_CSV]


def test_reading_a_journal_names_every_malformed_line_and_keeps_the_rest(tmp_path):
    path = tmp_path / schema.EVENTS_JSONL
    good = json.dumps(EVENT_KEYS | {"t_s": 1.0})
    path.write_text("\n".join([good, "{", good, "null", good, '{"run_id": "x"']))
    read = journal.read_journal(path)
    assert [record.line for record in read.records] == [1, 3, 5]
    assert {line: re.sub(r" \(.*", "", why) for line, why in read.malformed.items()} == {
        2: "not JSON",
        4: "not a JSON object but null",
    }
    assert read.cut_short == 6
    assert read.skipped("events.jsonl")[-1] == (
        "events.jsonl line 6: cut short (fwbench stopped while writing it): skipped"
    )
