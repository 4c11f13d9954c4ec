"""Nothing measured is lost when fwbench is stopped: Ctrl-C cancels the run on its service and
keeps what was measured, `--resume` finishes the rest, and after a `kill -9` every finished run is
recovered from the journal by `fwbench report`. Real processes, real signals."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.conftest import ROOT, fwbench

pytestmark = [pytest.mark.framework, pytest.mark.slow]
FWBENCH = ROOT / ".venvs" / "orchestrator" / "bin" / "fwbench"


def start(*argv) -> subprocess.Popen:
    return subprocess.Popen(
        [FWBENCH, *map(str, argv)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def training_workers() -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if "services.common.worker" in (p.info["cmdline"] or []) and "train" in p.info["cmdline"]
    ]


def test_ctrl_c_cancels_keeps_the_measured_and_resume_finishes(tmp_path: Path):
    out = tmp_path / "out"
    run = start(
        "run", "--frameworks", "pytorch", "--models", "mobilenet_v2", "--repeats", "2",
        "--train-limit", "2048", "--test-limit", "64", "--epochs", "2", "--out", out,
    )  # fmt: skip
    wait_for(lambda: (out / "epochs.csv").exists())  # the first epoch is measured
    run.send_signal(signal.SIGINT)
    interrupted_at = time.monotonic()
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 130, output
    wait_for(lambda: not training_workers(), timeout_s=5)
    assert time.monotonic() - interrupted_at < 15
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["cancelled"]
    assert "interrupted by the user" in runs.loc[0, "error"]
    assert len(pd.read_csv(out / "epochs.csv")) >= 1
    assert (out / "report.md").exists()
    assert f"fwbench run --resume {out}" in output

    resumed = fwbench("run", "--resume", out, timeout_s=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["run_id"]) == ["mobilenet_v2-pytorch-r0", "mobilenet_v2-pytorch-r1"]
    assert (runs["status"] == "ok").all()
    # The cancelled attempt's epochs are gone with it: two epochs per run, no more.
    epochs = pd.read_csv(out / "epochs.csv")
    assert epochs.groupby("run_id")["epoch"].apply(list).to_dict() == {
        run_id: [0, 1] for run_id in runs["run_id"]
    }


def test_after_kill_9_report_recovers_every_finished_run(tmp_path: Path):
    out = tmp_path / "out"
    run = start(
        "run", "--frameworks", "pytorch", "--models", "mobilenet_v2", "--repeats", "3",
        "--train-limit", "1024", "--test-limit", "64", "--epochs", "1", "--out", out,
    )  # fmt: skip
    wait_for(lambda: (out / "runs.csv").exists() and training_workers())
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


def test_a_service_that_dies_mid_suite_takes_only_its_run(tmp_path: Path):
    out = tmp_path / "out"
    run = start(
        "run", "--frameworks", "pytorch", "--models", "mobilenet_v2", "--repeats", "2",
        "--train-limit", "2048", "--test-limit", "64", "--epochs", "1", "--out", out,
    )  # fmt: skip
    wait_for(lambda: training_workers())
    [server] = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "services.common.server" in (p.info["cmdline"] or [])
        and str(run.pid) in p.info["cmdline"]
    ]
    server.kill()
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 1, output
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["status"]) == ["failed", "ok"]
    assert runs.loc[0, "error"].startswith("UNAVAILABLE")
    assert re.search(r"the pytorch@127\.0\.0\.1:\d+ service died and serves again", output)
