"""A pool of services: several per framework, runs at once where they train on different things,
one run per service at a time, and a service that dies takes only its own run.

The services here are real server processes on this machine; `--node` tells each which machine
its CPUs belong to, as the downward API does in Kubernetes, so two of them stand for two hosts.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from orchestrator.running import launchers
from orchestrator.running.pool import Pool
from tests.conftest import ROOT, fwbench, needs_framework, venv_python

_LISTENING = re.compile(r"listening on \S+:(\d+)")


@pytest.fixture
def serve():
    """serve(framework, node) -> (process, port) of a real service; all stopped afterwards."""
    started = []

    def start(framework: str, node: str) -> tuple[subprocess.Popen, int]:
        needs_framework()
        process = subprocess.Popen(
            [venv_python(framework), "-m", "services.common.server", "--framework", framework,
             "--port", "0", "--node", node],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        started.append(process)
        port = int(_LISTENING.search(process.stdout.readline()).group(1))
        return process, port

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def spans(out: Path) -> dict[str, tuple[float, float]]:
    """run_id -> (when fwbench saw its spec, when it saw its outcome), in journal order."""
    first, last = {}, {}
    for i, record in enumerate(journal(out)):
        first.setdefault(record["run_id"], i)
        last[record["run_id"]] = i
    return {run_id: (first[run_id], last[run_id]) for run_id in first}


def overlapping(out: Path) -> bool:
    intervals = sorted(spans(out).values())
    return any(b_start < a_end for (_, a_end), (b_start, _) in itertools.pairwise(intervals))


RUN = ["run", "--frameworks", "pytorch", "--models", "mobilenet", "--launcher", "remote"]
TINY = ["--train-limit", "256", "--test-limit", "32", "--epochs", "1"]


@pytest.mark.framework
def test_services_on_two_nodes_train_at_once_one_run_each(tmp_path, serve):
    ports = [serve("pytorch", node)[1] for node in ("host-a", "host-b")]
    out = tmp_path / "out"
    services = [a for p in ports for a in ("--service", f"pytorch=127.0.0.1:{p}")]
    result = fwbench(*RUN, *services, *TINY, "--repeats", "2", "--out", out, timeout_s=600)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = pd.read_csv(out / "runs.csv")
    # Every run ok: a service asked for a second run at once would have refused it.
    assert sorted(runs["run_id"]) == [f"mobilenet-pytorch-r{r}" for r in range(2)]
    assert (runs["status"] == "ok").all(), runs["error"].tolist()
    assert overlapping(out)
    pool = json.loads((out / "context.json").read_text())["pool"]
    assert sorted(m["placement"] for m in pool) == ["cpu@host-a", "cpu@host-b"]


@pytest.mark.framework
def test_services_on_one_node_take_turns(tmp_path, serve):
    ports = [serve("pytorch", "same-host")[1] for _ in range(2)]
    out = tmp_path / "out"
    services = [a for p in ports for a in ("--service", f"pytorch=127.0.0.1:{p}")]
    result = fwbench(*RUN, *services, *TINY, "--repeats", "2", "--out", out, timeout_s=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not overlapping(out)


@pytest.mark.framework
def test_a_pool_member_that_dies_takes_only_its_run_and_holds_up_no_other(tmp_path, serve):
    (_, port_a), (doomed, port_b) = serve("pytorch", "host-a"), serve("pytorch", "host-b")
    out = tmp_path / "out"
    command = [ROOT / ".venvs" / "orchestrator" / "bin" / "fwbench", *RUN]
    command += [
        "--service",
        f"pytorch=127.0.0.1:{port_a}",
        "--service",
        f"pytorch=127.0.0.1:{port_b}",
    ]
    command += ["--train-limit", "512", "--test-limit", "32", "--epochs", "1"]
    # Three runs: one on each service at once, the third on the one that survives.
    command += ["--repeats", "3", "--out", out]
    run = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "events.jsonl").exists() or len(spans(out)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    doomed.kill()
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 1, output
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 3 and sorted(runs["status"]) == ["failed", "ok", "ok"]
    [error] = runs.loc[runs["status"] == "failed", "error"]
    assert error.startswith("UNAVAILABLE")
    gone = f"pytorch@127.0.0.1:{port_b} service died; it leaves the pool"
    assert gone in output
    # The pool waits REMOTE_CONNECT_TIMEOUT_S (15 s) for the dead member to serve again, off the
    # scheduling thread: meanwhile the survivor finishes its run (a few seconds here) and starts
    # the third, which would otherwise wait for the pool to give up.
    third = max(spans(out).items(), key=lambda item: item[1][0])[0]
    assert output.index(f"{third}: epoch 0/1 before training") < output.index(gone), output


@pytest.mark.framework
def test_a_local_service_that_is_still_running_but_does_not_answer_is_restarted(tmp_path):
    """The order in which a killed service was lost from the pool, made deterministic: the pool is
    asked to revive a service whose process still counts as running (poll() says so until the
    kernel has reaped a killed one). SIGSTOP holds it there: alive to poll(), deaf to gRPC. It is
    restarted, never taken for alive and dropped."""
    needs_framework()
    with launchers.local(["pytorch"], tmp_path) as launched:
        pool = Pool(launched)
        [member] = pool.members
        [server] = [
            p for p in psutil.Process().children() if "services.common.server" in p.cmdline()
        ]
        server.suspend()
        restarted = pool.restart(member)
        pool.replace(member, restarted)
        [revived] = pool.members
        assert revived is restarted
        assert revived.endpoint != member.endpoint
        assert revived.client.serving(timeout_s=5)
        assert not server.is_running()  # killed and reaped, not left stopped
        pool.close()
