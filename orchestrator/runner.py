"""Runs an experiment: every (repeat, model, framework) with the identical spec, one at a time.

Frameworks never train at the same time: runs go one after another, interleaved per model so
that slow drift of the machine (thermals, other load) does not favour one framework.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import grpc
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.client import RunOutcome
from orchestrator.launchers import Clients
from orchestrator.options import for_model
from orchestrator.results import ResultsWriter


@dataclasses.dataclass(frozen=True)
class Experiment:
    frameworks: list[str]
    models: list[str]
    repeats: int
    spec: pb.TrainSpec  # the base spec; model name, seed and run_id are set per run


def runs(experiment: Experiment) -> Iterator[tuple[dict, pb.TrainSpec]]:
    """(run keys, spec) of every run, in the order they train."""
    for repeat in range(experiment.repeats):
        for model in experiment.models:
            for framework in experiment.frameworks:
                spec = for_model(experiment.spec, model)
                # Each repeat has its own seed, and every framework gets the same one.
                spec.seed = experiment.spec.seed + repeat
                spec.run_id = f"{model}-{framework}-r{repeat}"
                run = {"run_id": spec.run_id, "framework": framework, "model": model}
                yield run | {"repeat": repeat}, spec


class Interrupted(Exception):
    """Ctrl-C during a run: the run was cancelled on its service and recorded as such."""


def run_experiment(
    experiment: Experiment,
    clients: Clients,
    writer: ResultsWriter,
    console: Console,
) -> list[dict]:
    """Runs what the writer has not recorded as finished yet, writing results as events arrive;
    returns every runs.csv row. Raises Interrupted after recording a run cut short by Ctrl-C."""
    finished = {row["run_id"] for row in writer.rows}
    todo = [(run, spec) for run, spec in runs(experiment) if run["run_id"] not in finished]
    if finished:
        console.print(f"resuming: {len(finished)} run(s) already finished, {len(todo)} to go")
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    durations_s: list[float] = []
    with progress:
        for k, (run, spec) in enumerate(todo):
            label = f"run {k + 1} of {len(todo)}: {run['run_id']}"
            task = progress.add_task(label, total=None, status=_remaining(durations_s, len(todo)))
            start = time.monotonic()
            outcome = _one_run(run, spec, clients[run["framework"]], writer, progress, task)
            durations_s.append(time.monotonic() - start)
            # A service that died takes its run with it, not the runs after it.
            dead = outcome.code == grpc.StatusCode.UNAVAILABLE
            if dead and clients.revive(run["framework"]):
                console.print(f"the {run['framework']} service died and was restarted")
            progress.remove_task(task)
    return writer.rows


def _remaining(durations_s: list[float], total: int) -> str:
    """Time left for the whole invocation, from the runs so far (frameworks differ, so the mean
    of every finished run, not the last one)."""
    if not durations_s:
        return "starting worker"
    left_s = (total - len(durations_s)) * sum(durations_s) / len(durations_s)
    return f"~{left_s / 60:.0f} min left in all" if left_s >= 90 else f"~{left_s:.0f} s left in all"


def _one_run(run: dict, spec: pb.TrainSpec, client, writer, progress, task) -> RunOutcome:
    console = progress.console
    writer.run_begins(run, spec)

    def on_event(event: pb.TrainEvent) -> None:
        writer.event(run, event)
        kind = event.WhichOneof("event")
        if kind == "run_started":
            started = event.run_started
            progress.update(
                task, total=started.steps_per_epoch * spec.epochs, status=started.device_name
            )
        elif kind == "progress":
            p = event.progress
            progress.update(
                task,
                completed=p.epoch * p.steps_per_epoch + p.step,
                status=f"epoch {p.epoch + 1}/{spec.epochs} loss {p.loss:.3f} "
                f"{p.images_per_s:,.0f} img/s",
            )
        elif kind == "epoch_end":
            e = event.epoch_end
            console.print(
                f"{run['run_id']}: epoch {e.epoch + 1}/{spec.epochs} "
                f"train loss {e.train_loss:.3f} acc {e.train_accuracy:.3f} · "
                f"test loss {e.test_loss:.3f} acc {e.test_accuracy:.3f} · "
                f"{e.epoch_time_s:.1f} s ({e.images_per_s:,.0f} img/s)"
            )

    outcome = client.run(spec, on_event)
    if outcome.interrupted:
        writer.run_finished(run | {"status": "cancelled"}, spec, outcome)
        raise Interrupted(run["run_id"])
    if not outcome.ok:
        console.print(f"[red]{escape(run['run_id'])} failed[/red] {escape(outcome.error)}")
    writer.run_finished(run, spec, outcome)
    return outcome
