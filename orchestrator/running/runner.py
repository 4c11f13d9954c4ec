"""Runs an experiment: every (repeat, model, framework) with the identical spec, on a pool.

Runs are taken in plan order, interleaved per model so that slow drift of the machine (thermals,
other load) hits every framework alike. A run starts as soon as a member of its framework is idle
and nothing trains on that member's placement (orchestrator/running/pool.py): with one service per
framework sharing one GPU, that is one run after another; with a pool on several GPUs, one run per
GPU at a time. Results are written as events arrive, identical in form either way.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.inputs.options import for_model
from orchestrator.results.journal import ResultsWriteError, ResultsWriter, RunOutcome
from orchestrator.running.launchers import LauncherError
from orchestrator.running.pool import Member, Pool


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


# The contract's words for a run stopped because its service was shut down (proto: UNAVAILABLE).
SHUTTING_DOWN = "service shutting down"


class Interrupted(Exception):
    """Ctrl-C during the experiment: the runs in progress were cancelled on their services and
    recorded as such."""


def run_experiment(
    experiment: Experiment, pool: Pool, writer: ResultsWriter, console: Console
) -> list[dict]:
    """Runs what the writer has not recorded as finished yet, writing results as events arrive;
    returns every runs.csv row. Raises Interrupted after recording runs cut short by Ctrl-C."""
    finished = {row["run_id"] for row in writer.rows}
    pending = [(run, spec) for run, spec in runs(experiment) if run["run_id"] not in finished]
    if finished:
        console.print(f"resuming: {len(finished)} run(s) already finished, {len(pending)} to go")
    _Scheduler(pool, writer, console, total=len(pending)).run(pending)
    return writer.rows


class _Scheduler:
    def __init__(self, pool: Pool, writer: ResultsWriter, console: Console, total: int):
        self._pool = pool
        self._writer = _Locked(writer)
        self._total = total
        self._started = 0
        self._durations_s: list[float] = []
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._console = self._progress.console

    def run(self, pending: list[tuple[dict, pb.TrainSpec]]) -> None:
        running: dict[futures.Future, tuple[Member, dict, pb.TrainSpec, float]] = {}
        restarting: dict[futures.Future, Member] = {}
        with (
            self._progress,
            futures.ThreadPoolExecutor(max_workers=max(1, len(self._pool.members))) as executor,
        ):
            try:
                while pending or running or restarting:
                    self._start_what_can_start(pending, running, restarting, executor)
                    if not running and not restarting:
                        # Runs left, no member of their framework left to run them.
                        for run, spec in pending:
                            self._writer.run_finished(
                                run, spec, RunOutcome(error=f"no {run['framework']} service left")
                            )
                        break
                    done, _ = futures.wait(
                        [*running, *restarting], return_when=futures.FIRST_COMPLETED
                    )
                    for future in done:
                        if future in restarting:
                            self._restarted(restarting.pop(future), future)
                            continue
                        member, run, spec, start = running.pop(future)
                        outcome = future.result()
                        self._finished(run, spec, start, outcome)
                        # A service that died takes its run with it, not the runs after it. It
                        # restarts off this thread, so runs elsewhere start and end meanwhile.
                        if outcome.code == grpc.StatusCode.UNAVAILABLE:
                            restarting[_in_background(self._pool.restart, member)] = member
            except ResultsWriteError:
                # Nothing more can be recorded: stop the runs still going rather than wait for them.
                for member, *_ in running.values():
                    member.client.cancel()
                raise
            except KeyboardInterrupt:
                # Worker threads never see Ctrl-C: cancel their calls; each records its run.
                for member, *_ in running.values():
                    member.client.cancel()
                for future, (_, run, spec, _) in running.items():
                    self._record(run, spec, future.result())
                raise Interrupted() from None

    def _start_what_can_start(self, pending, running, restarting, executor) -> None:
        # A member restarting is busy, and so is its placement: a service starting up (imports,
        # a CUDA context) would slow a run beside it on the same GPU or CPUs.
        busy = [m for m, *_ in running.values()] + list(restarting.values())
        busy_members = {id(m) for m in busy}
        busy_placements = {m.placement for m in busy}
        for run, spec in list(pending):
            member = next(
                (
                    m
                    for m in self._pool.members
                    if m.framework == run["framework"]
                    and id(m) not in busy_members
                    and m.placement not in busy_placements
                ),
                None,
            )
            if member is None:
                continue
            pending.remove((run, spec))
            busy_members.add(id(member))
            busy_placements.add(member.placement)
            self._started += 1
            label = f"run {self._started} of {self._total}: {run['run_id']}"
            task = self._progress.add_task(label, total=None, status=self._remaining())
            future = executor.submit(self._train, member, run, spec, task)
            running[future] = (member, run, spec, time.monotonic())

    def _train(self, member: Member, run: dict, spec: pb.TrainSpec, task) -> RunOutcome:
        self._writer.run_begins(run, spec)
        try:
            return member.client.run(spec, lambda event: self._on_event(run, spec, task, event))
        finally:
            self._progress.remove_task(task)

    def _finished(self, run: dict, spec: pb.TrainSpec, start: float, outcome: RunOutcome) -> None:
        self._durations_s.append(time.monotonic() - start)
        self._record(run, spec, outcome)

    def _restarted(self, member: Member, restart: futures.Future) -> None:
        try:
            restarted = restart.result()
        except LauncherError as e:  # it would not start again: the pool goes on without it
            self._console.print(
                f"the {member.name} service could not be restarted: {e}", markup=False
            )
            restarted = None
        self._pool.replace(member, restarted)
        if restarted is None:
            self._console.print(f"the {member.name} service died; it leaves the pool")
        else:
            self._console.print(f"the {member.name} service died and serves again")

    def _record(self, run: dict, spec: pb.TrainSpec, outcome: RunOutcome) -> None:
        if outcome.interrupted:
            self._writer.run_finished(run | {"status": "cancelled"}, spec, outcome)
            return
        if outcome.code == grpc.StatusCode.UNAVAILABLE and SHUTTING_DOWN in outcome.error:
            # The service was stopped, not broken: `--resume` runs this one again.
            self._console.print(f"{run['run_id']}: its service shut down", markup=False)
            self._writer.run_finished(run | {"status": "interrupted"}, spec, outcome)
            return
        if not outcome.ok:
            self._console.print(
                f"[red]{escape(run['run_id'])} failed[/red] {escape(outcome.error)}"
            )
        self._writer.run_finished(run, spec, outcome)

    def _remaining(self) -> str:
        """Time left for the whole invocation, from the runs so far (frameworks differ, so the
        mean of every finished run, not the last one's)."""
        if not self._durations_s:
            return "starting worker"
        mean_s = sum(self._durations_s) / len(self._durations_s)
        left_s = (self._total - len(self._durations_s)) * mean_s
        return f"~{left_s / 60:.0f} min left in all" if left_s >= 90 else f"~{left_s:.0f} s left"

    def _on_event(self, run: dict, spec: pb.TrainSpec, task, event: pb.TrainEvent) -> None:
        self._writer.event(run, event)
        kind = event.WhichOneof("event")
        if kind == "run_started":
            started = event.run_started
            self._progress.update(
                task, total=started.steps_per_epoch * spec.epochs, status=started.device_name
            )
        elif kind == "progress":
            p = event.progress
            self._progress.update(
                task,
                completed=p.epoch * p.steps_per_epoch + p.step,
                status=f"epoch {p.epoch + 1}/{spec.epochs} loss {p.loss:.3f} "
                f"{p.images_per_s:,.0f} img/s",
            )
        elif kind == "epoch_end":
            e = event.epoch_end
            trained = (
                f"train loss {e.train_loss:.3f} acc {e.train_accuracy:.3f} · "
                if not e.before_training
                else "before training · "
            )
            speed = f" ({e.images_per_s:,.0f} img/s)" if not e.before_training else ""
            self._console.print(
                f"{run['run_id']}: epoch {e.epoch}/{spec.epochs} {trained}"
                f"test loss {e.test_loss:.3f} acc {e.test_accuracy:.3f} · "
                f"{e.epoch_time_s:.1f} s{speed}",
                markup=False,
            )
        elif kind == "deployment":
            for result in event.deployment.results:
                self._console.print(deploy_line(run["run_id"], result), markup=False)


def _in_background(function, *args) -> futures.Future:
    """function(*args) on a daemon thread: a service still restarting never holds up fwbench's exit
    on Ctrl-C (a service started meanwhile exits with its parent: --parent-pid)."""
    future: futures.Future = futures.Future()

    def work() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as e:  # handed to whoever waits for the future
            future.set_exception(e)

    threading.Thread(target=work, daemon=True).start()
    return future


class _Locked:
    """The writer, one call at a time: runs on several services report at once."""

    def __init__(self, writer: ResultsWriter):
        self._writer = writer
        self._lock = threading.Lock()

    def run_begins(self, *args) -> None:
        with self._lock:
            self._writer.run_begins(*args)

    def event(self, *args) -> None:
        with self._lock:
            self._writer.event(*args)

    def run_finished(self, *args) -> None:
        with self._lock:
            self._writer.run_finished(*args)


def deploy_line(run_id: str, result: pb.DeployResult) -> str:
    """One format of a run's deployment, as the console shows it when it arrives."""
    if result.status == "failed":
        return f"{run_id}: deploy {result.format} failed: {result.error.splitlines()[0]}"
    return (
        f"{run_id}: deploy {result.format} {result.status} · export {result.export_s:.1f} s · "
        f"{result.size_bytes / 1e6:.1f} MB · load {result.load_s:.2f} s · batch 1 p50 "
        f"{result.batch1_p50_ms:.2f} ms · batch 32 p50 {result.batch32_p50_ms:.2f} ms · "
        f"max |Δ| {result.max_abs_diff:.1e}"
    )
