"""Runs an experiment: every (repeat, model, framework) with the identical spec, one at a time.

Frameworks never train at the same time: runs go one after another, interleaved per model so
that slow drift of the machine (thermals, other load) does not favour one framework.
"""

from __future__ import annotations

import dataclasses

import grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.client import TrainerClient
from orchestrator.results import ResultsWriter


@dataclasses.dataclass
class Experiment:
    frameworks: list[str]
    models: list[str]
    repeats: int
    spec: pb.TrainSpec  # the base spec; model name, seed and run_id are set per run


def runs(experiment: Experiment):
    for repeat in range(experiment.repeats):
        for model in experiment.models:
            for framework in experiment.frameworks:
                spec = pb.TrainSpec()
                spec.CopyFrom(experiment.spec)
                spec.model.name = model
                # Each repeat has its own seed, and every framework gets the same one.
                spec.seed = experiment.spec.seed + repeat
                spec.run_id = f"{model}-{framework}-r{repeat}"
                yield (
                    {
                        "run_id": spec.run_id,
                        "framework": framework,
                        "model": model,
                        "repeat": repeat,
                    },
                    spec,
                )


def run_experiment(
    experiment: Experiment,
    clients: dict[str, TrainerClient],
    writer: ResultsWriter,
    console: Console,
) -> list[dict]:
    """Runs everything, writing results as events arrive; returns the runs.csv rows."""
    rows = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        for run, spec in runs(experiment):
            task = progress.add_task(run["run_id"], total=None, status="starting worker")
            rows.append(_one_run(run, spec, clients[run["framework"]], writer, progress, task))
            progress.remove_task(task)
    return rows


def _one_run(run, spec, client, writer, progress, task) -> dict:
    console = progress.console
    started: pb.RunStarted | None = None
    end: pb.RunEnd | None = None
    stream = client.train(spec)
    try:
        for event in stream:
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
            elif kind == "run_end":
                end = event.run_end
    except grpc.RpcError as e:
        error = f"{e.code().name}: {e.details()}"
        console.print(f"[red]{run['run_id']} failed[/red] {error}")
        return writer.run_finished(run, spec, started, None, error)
    except KeyboardInterrupt:
        stream.cancel()
        writer.run_finished(run, spec, started, None, "CANCELLED: interrupted by the user")
        raise
    if end is None:
        return writer.run_finished(run, spec, started, None, "the stream ended without RunEnd")
    return writer.run_finished(run, spec, started, end)
