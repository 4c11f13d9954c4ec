"""Nothing measured is lost when fwbench is stopped: Ctrl-C cancels the run on its service and
keeps what was measured, `--resume` finishes the rest, and after a `kill -9` every finished run is
recovered from the journal by `fwbench report`. Real processes, real signals."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

from orchestrator.results.journal import read_journal
from tests.conftest import ROOT, fwbench

pytestmark = pytest.mark.framework
FWBENCH = ROOT / ".venvs" / "orchestrator" / "bin" / "fwbench"


def start(*argv) -> subprocess.Popen:
    # As from a terminal, where Ctrl-C reaches fwbench. A suite started in the background by a
    # shell without job control inherits SIGINT ignored, and Python then leaves it ignored (as
    # `nohup`'s user wants): the Ctrl-C tests would test nothing. `env` restores it and execs
    # fwbench (same pid). Not a preexec_fn: forking this process, which runs gRPC threads, with
    # Python's fork handlers made fwbench's child abort in gRPC's poller (exit -6) before exec.
    return subprocess.Popen(
        ["env", "--default-signal=INT", FWBENCH, *map(str, argv)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, run: subprocess.Popen | None = None, timeout_s: float = 180) -> None:
    """Polls condition until it holds; fails at once, with fwbench's output, if the fwbench
    process `run` ended first (what it waited for can no longer happen)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if run is not None and run.poll() is not None:
            pytest.fail(f"fwbench exited {run.returncode} first:\n{run.stdout.read()}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def trained_epochs(out: Path) -> int:
    """Training epochs in out's epochs.csv so far: the baseline before training (epoch 0) is not
    one."""
    try:
        return int((pd.read_csv(out / "epochs.csv")["epoch"] > 0).sum())
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def local_services(run: subprocess.Popen) -> list[psutil.Process]:
    """The services this fwbench process started: they name it with --parent-pid."""
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if "services.common.server" in (p.info["cmdline"] or [])
        and str(run.pid) in p.info["cmdline"]
    ]


def training_workers(run: subprocess.Popen) -> list[psutil.Process]:
    """The workers training for this fwbench process, children of its local services (other
    fwbench runs on the machine train workers too, and are not ours)."""
    workers = []
    for service in local_services(run):
        with contextlib.suppress(psutil.NoSuchProcess):
            workers += [
                child
                for child in service.children(recursive=True)
                if "services.common.worker" in child.cmdline() and "train" in child.cmdline()
            ]
    return workers


def all_gone(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() for p in processes)


def test_ctrl_c_cancels_keeps_the_measured_and_resume_finishes(tmp_path: Path):
    out = tmp_path / "out"
    # Epochs of 16 steps (a second or more each): the Ctrl-C lands within 0.1 s of the first
    # one's end, well inside the second.
    run = start(
        "run", "--frameworks", "pytorch", "--models", "mobilenet", "--repeats", "2",
        "--train-limit", "512", "--test-limit", "64", "--epochs", "2", "--out", out,
    )  # fmt: skip
    wait_for(lambda: trained_epochs(out) >= 1, run)  # the first epoch is measured
    workers = training_workers(run)
    run.send_signal(signal.SIGINT)
    interrupted_at = time.monotonic()
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 130, output
    wait_for(lambda: all_gone(workers) and not training_workers(run), timeout_s=5)
    assert time.monotonic() - interrupted_at < 15
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["cancelled"]
    assert "interrupted by the user" in runs.loc[0, "error"]
    assert trained_epochs(out) >= 1
    assert (out / "report.md").exists()
    assert f"fwbench run --resume {out}" in output

    resumed = fwbench("run", "--resume", out, timeout_s=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["run_id"]) == ["mobilenet-pytorch-r0", "mobilenet-pytorch-r1"]
    assert (runs["status"] == "ok").all()
    # The cancelled attempt's epochs are gone with it: the baseline and two epochs per run, no
    # more.
    epochs = pd.read_csv(out / "epochs.csv")
    assert epochs.groupby("run_id")["epoch"].apply(list).to_dict() == {
        run_id: [0, 1, 2] for run_id in runs["run_id"]
    }


def mid_training(out: Path) -> bool:
    """A run was recorded, and the journal's latest run has trained steps but not reached its
    RunEnd. (A training worker alone is no sign: it lives on for a moment after its RunEnd.)"""
    if not (out / "runs.csv").exists():
        return False
    records = read_journal(out / "events.jsonl").records
    latest = [r for r in records if r.run_id == records[-1].run_id]
    kinds = {r.event.WhichOneof("event") for r in latest if r.event is not None}
    return "progress" in kinds and "run_end" not in kinds and latest[-1].outcome is None


def test_after_kill_9_report_recovers_every_finished_run(tmp_path: Path):
    out = tmp_path / "out"
    # Runs of 32 steps: the kill lands seconds before the running one's end.
    run = start(
        "run", "--frameworks", "pytorch", "--models", "mobilenet", "--repeats", "3",
        "--train-limit", "1024", "--test-limit", "64", "--epochs", "1", "--out", out,
    )  # fmt: skip
    wait_for(lambda: mid_training(out), run)
    run.kill()
    run.wait()
    finished = pd.read_csv(out / "runs.csv")
    copy = tmp_path / "copy"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = fwbench("report", out, "--out", copy, timeout_s=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    rebuilt = pd.read_csv(copy / "runs.csv")
    pd.testing.assert_frame_equal(rebuilt.iloc[: len(finished)], finished, check_dtype=False)
    assert rebuilt["status"].iloc[len(finished)] == "interrupted"
    assert (copy / "report.html").exists() and (copy / "context.json").exists()


@pytest.fixture
def tiny_run(saved_run) -> Path:
    """One real run, as small as runs go (conftest's saved_run: PyTorch, synthetic data, 64
    images, CPU; its saved weights are recorded in RunEnd like any field): its result set is what
    the kill -9 tests below cut and rebuild."""
    return saved_run


def killed(run: Path, to: Path, journal: bytes) -> Path:
    """A copy of run as a kill -9 leaves it when the journal held `journal`: the epochs and
    telemetry written by then, no runs.csv and no report (written at the run's end)."""
    to.mkdir()
    for name in ("context.json", "epochs.csv", "telemetry.csv"):
        shutil.copyfile(run / name, to / name)
    (to / "events.jsonl").write_bytes(journal)
    return to


def through_run_end(run: Path) -> tuple[bytes, bytes]:
    """The journal through its RunEnd line, and the rest (the outcome line)."""
    journal = (run / "events.jsonl").read_bytes()
    end = journal.index(b"\n", journal.index(b'"run_end"')) + 1
    rest = journal[end:]
    assert rest.count(b"\n") == 1 and b'"outcome"' in rest, rest  # the outcome line alone
    return journal[:end], rest


def test_a_run_killed_after_its_run_end_is_rebuilt_as_the_run_wrote_it(tiny_run, tmp_path):
    journal, _ = through_run_end(tiny_run)  # the kill -9 came before the outcome line
    out = killed(tiny_run, tmp_path / "killed", journal)
    result = fwbench("report", out, timeout_s=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no run finished" not in result.stdout
    written = pd.read_csv(tiny_run / "runs.csv")
    assert list(written["status"]) == ["ok"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "runs.csv"), written)


def test_resume_after_a_kill_after_run_end_trains_that_run_no_more(tiny_run, tmp_path):
    journal, _ = through_run_end(tiny_run)
    out = killed(tiny_run, tmp_path / "killed", journal)
    result = fwbench("run", "--resume", out, timeout_s=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming: 1 run(s) already finished, 0 to go" in result.stdout
    pd.testing.assert_frame_equal(pd.read_csv(out / "runs.csv"), pd.read_csv(tiny_run / "runs.csv"))


def test_an_outcome_line_cut_short_by_a_kill_is_skipped_with_a_warning(tiny_run, tmp_path):
    journal, outcome = through_run_end(tiny_run)
    out = killed(tiny_run, tmp_path / "killed", journal + outcome[: len(outcome) // 2])
    result = fwbench("report", out, timeout_s=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = journal.count(b"\n") + 1
    assert f"{out / 'events.jsonl'} line {lines}: cut short" in result.stdout
    pd.testing.assert_frame_equal(pd.read_csv(out / "runs.csv"), pd.read_csv(tiny_run / "runs.csv"))


def test_a_service_that_dies_mid_suite_takes_only_its_run(tmp_path: Path):
    out = tmp_path / "out"
    run = start(
        "run", "--frameworks", "pytorch", "--models", "mobilenet", "--repeats", "2",
        "--train-limit", "512", "--test-limit", "64", "--epochs", "1", "--out", out,
    )  # fmt: skip
    # Killed while its first run's worker imports PyTorch, seconds before its first step.
    wait_for(lambda: training_workers(run), run)
    [server] = local_services(run)
    server.kill()
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 1, output
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["failed", "ok"]
    assert runs.loc[0, "error"].startswith("UNAVAILABLE")
    assert re.search(r"the pytorch@127\.0\.0\.1:\d+ service died and serves again", output)


@contextlib.contextmanager
def small_disk(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of size_bytes mounted on path, a disk the test can fill; skips where mounting is
    not allowed (it needs root)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({mounted.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def begun(out: Path) -> list[str]:
    """The runs whose spec the journal holds, in order."""
    return [r.run_id for r in read_journal(out / "events.jsonl").records if r.spec is not None]


def fill(disk: Path) -> Path:
    """Writes zeros into disk until it is full; returns the file that holds them."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as file, contextlib.suppress(OSError):  # ENOSPC
        while True:
            file.write(bytes(1 << 16))
    return filler


def test_a_full_disk_stops_the_runs_naming_the_file_and_keeps_what_was_written(tmp_path: Path):
    with small_disk(tmp_path / "disk", 16 << 20) as disk:
        out = disk / "out"
        # One epoch of 32 steps: the second run then starts its worker and trains for seconds,
        # during which the disk fills.
        run = start(
            "run", "--frameworks", "pytorch", "--models", "mobilenet", "--repeats", "2",
            "--train-limit", "1024", "--test-limit", "64", "--epochs", "1", "--out", out,
        )  # fmt: skip
        # The first run is recorded and the second has begun.
        wait_for(lambda: (out / "runs.csv").exists() and len(begun(out)) == 2, run)
        journal = (out / "events.jsonl").read_bytes()
        runs = (out / "runs.csv").read_bytes()
        workers = training_workers(run)
        filler = fill(disk)  # while the second run trains
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 2, output
        assert f"cannot write {out}/" in output and "No space left on device" in output, output
        assert f"`fwbench run --resume {out}` runs the rest" in output
        wait_for(lambda: all_gone(workers) and not training_workers(run), timeout_s=10)
        # What was written before the disk filled is all there, unchanged.
        assert (out / "events.jsonl").read_bytes().startswith(journal)
        assert (out / "runs.csv").read_bytes() == runs
        assert not (out / "runs.csv.partial").exists()
        assert (out / "context.json").exists()

        # With room again, the journal gives back the finished run and the one cut short.
        filler.unlink()
        rebuilt = fwbench("report", out, timeout_s=120)
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert list(pd.read_csv(out / "runs.csv")["status"]) == ["ok", "interrupted"]
