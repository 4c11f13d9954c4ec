"""Deployment, measured: the one harness every framework's serving formats go through.

After training (spec.deploy.deploy_enabled), a trainer hands `measure` its serving formats — for
each, a function that exports the trained model into a directory, and the name of a function that
loads such a directory into a `predict(images) -> outputs` callable — and the trained model's own
outputs on the probe batch. For every format, `measure`:

1. exports into a temporary directory, timed (export_s), and sums the directory (size_bytes);
2. starts a fresh process of the same environment, `python -m services.common.deploy ...`, which
   imports only the runtime the format needs (import_s), loads the artifact (load_s), calls it
   once (first_inference_s), then times `timed` calls after `warmup` untimed ones at batch 1 and
   at batch 32, and writes its latencies and its outputs on the probe batch;
3. compares those outputs with the trained model's (max_abs_diff): beyond the tolerance the
   format is a `mismatch`, never ok.

A step that raises ends that format as `failed` with the step and the library's message; the
other formats go on. Inputs are given to each format in its own layout (NCHW for PyTorch, NHWC
elsewhere), as host float32 arrays; a call returns a host array, so every timed call includes
the copies to and from the device, as a serving process pays them.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fwbench.v1 import trainer_pb2 as pb
from services.common import datasets

# The batch sizes whose latency is measured: one request at a time, and the training batch.
BATCH_SIZES = (1, 32)
PROBE_IMAGES = max(BATCH_SIZES)
# Outputs within this much of the trained model's, relative to its largest |output| (and at least
# this much absolute), are the same model: fp32 kernels of two runtimes differ by ~1e-6 relative.
RELATIVE_TOLERANCE = 1e-3
# A fresh process that neither finishes nor fails within this is a failed format.
FRESH_PROCESS_TIMEOUT_S = 1800
STDERR_TAIL_LINES = 20
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

Predict = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Format:
    """One serving format of a framework, as its trainer describes it."""

    # DeployResult.format: torch.export, onnx, savedmodel, tflite, jax.export.
    name: str
    # Writes the trained model's artifact into the (empty, existing) directory; runs in the
    # training worker, with the framework imported and the model in memory.
    export: Callable[[Path], None]
    # "module:function" run in the fresh process: function(directory, device) -> (predict,
    # runtime description, the device it serves on). The module is imported after `imports`, so
    # it must not import a framework at its top: the fresh process imports only what serving
    # needs.
    loader: str
    # What the fresh process imports first, timed as import_s: the runtime, and nothing else.
    imports: tuple[str, ...]
    # Whether the artifact takes NCHW images (PyTorch's layout) rather than NHWC.
    channels_first: bool = False


def probe(seed: int) -> np.ndarray:
    """The probe batch, float32 NHWC, normalised: the same images for every framework."""
    return datasets.probe_batch(seed, PROBE_IMAGES)


def tolerance(reference: np.ndarray) -> float:
    return RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))


def measure(
    spec: pb.TrainSpec,
    formats: Sequence[Format],
    reference: np.ndarray,
    device: str,
    diverged: bool = False,
) -> pb.Deployment:
    """Every format exported, reloaded in a fresh process on `device` ("cpu" or "cuda:0") and
    measured against `reference`, the trained model's outputs on probe(spec.seed)."""
    deploy = spec.deploy
    results = []
    with tempfile.TemporaryDirectory(prefix="fwbench-deploy-") as work:
        np.save(Path(work) / "probe.npy", probe(spec.seed))
        for number, form in enumerate(formats):
            result = pb.DeployResult(
                format=form.name,
                tolerance=tolerance(reference),
                warmup_iterations=deploy.deploy_warmup_iterations,
                timed_iterations=deploy.deploy_timed_iterations,
            )
            if diverged:
                result.status = "failed"
                result.error = "not exported: training diverged (its weights are not finite)"
            else:
                _measure_one(form, Path(work) / f"{number}", reference, device, result)
            results.append(result)
    return pb.Deployment(results=results)


def _measure_one(
    form: Format, work: Path, reference: np.ndarray, device: str, result: pb.DeployResult
) -> None:
    artifact = work / "artifact"
    artifact.mkdir(parents=True)
    start = time.perf_counter()
    try:
        form.export(artifact)
    except Exception as exc:
        traceback.print_exc()
        _fail(result, "export", _message(exc))
        return
    result.export_s = time.perf_counter() - start
    result.size_bytes = sum(f.stat().st_size for f in artifact.rglob("*") if f.is_file())

    report, outputs = work / "report.json", work / "outputs.npy"
    command = [
        sys.executable,
        "-m",
        "services.common.deploy",
        json.dumps(
            {
                "loader": form.loader,
                "imports": form.imports,
                "artifact": str(artifact),
                "device": device,
                "channels_first": form.channels_first,
                "probe": str(work.parent / "probe.npy"),
                "warmup": result.warmup_iterations,
                "timed": result.timed_iterations,
                "report": str(report),
                "outputs": str(outputs),
            }
        ),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=FRESH_PROCESS_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        _fail(result, "load and run", f"the fresh process took over {FRESH_PROCESS_TIMEOUT_S} s")
        return
    sys.stderr.write(done.stderr)
    measured = json.loads(report.read_text()) if report.exists() else {}
    result.runtime = measured.get("runtime", "")
    result.device = measured.get("device", device)
    for name in ("import_s", "load_s", "first_inference_s", *_latency_fields()):
        if name in measured:
            setattr(result, name, measured[name])
    if done.returncode != 0 or not outputs.exists():
        step = measured.get("failed_step", "load and run")
        tail = "\n".join(done.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        _fail(result, step, measured.get("error") or f"exit code {done.returncode}: {tail}")
        return
    got = np.load(outputs)
    if got.shape != reference.shape:
        _mismatch(result, f"outputs of shape {got.shape}, the trained model's {reference.shape}")
        return
    result.max_abs_diff = float(np.max(np.abs(got.astype(np.float64) - reference)))
    if not result.max_abs_diff <= result.tolerance:  # NaN is a mismatch too
        _mismatch(
            result,
            f"max |Δ| {result.max_abs_diff:.3g} from the trained model's outputs exceeds the "
            f"tolerance {result.tolerance:.3g}",
        )
        return
    result.status = "ok"


def _latency_fields() -> list[str]:
    return [f"batch{b}_{q}_ms" for b in BATCH_SIZES for q in ("p50", "p99")]


def _fail(result: pb.DeployResult, step: str, message: str) -> None:
    result.status = "failed"
    result.error = f"{step}: {message}"


def _mismatch(result: pb.DeployResult, message: str) -> None:
    result.status = "mismatch"
    result.error = message


def _message(exc: BaseException) -> str:
    """The exception's first lines, without terminal colours: library messages can run to pages
    (a whole graph dump), and the ONNX exporter colours its own."""
    text = ANSI_ESCAPE.sub("", str(exc)).strip() or type(exc).__name__
    lines = text.splitlines()
    return f"{type(exc).__name__}: " + "\n".join(lines[:STDERR_TAIL_LINES])


def p50_p99_ms(durations_s: list[float]) -> tuple[float, float]:
    """Median and 99th percentile in milliseconds, interpolated as numpy's default (inclusive)."""
    if len(durations_s) == 1:
        return durations_s[0] * 1e3, durations_s[0] * 1e3
    centiles = statistics.quantiles(durations_s, n=100, method="inclusive")
    return statistics.median(durations_s) * 1e3, centiles[98] * 1e3


def timed_calls(predict: Predict, images: np.ndarray, warmup: int, timed: int) -> list[float]:
    """Seconds of each of `timed` calls, after `warmup` untimed ones. predict returns a host
    array, so each call has finished on the device when its clock is read."""
    for _ in range(warmup):
        predict(images)
    durations = []
    for _ in range(timed):
        start = time.perf_counter()
        predict(images)
        durations.append(time.perf_counter() - start)
    return durations


# ---- the fresh process ---------------------------------------------------------------------------


def serve(request: dict) -> dict:
    """Imports the runtime, loads the artifact and measures it; returns the report and writes the
    outputs on the probe batch. Raises with `failed_step` in the report so far."""
    report: dict = {"device": request["device"]}
    step = "import"
    try:
        start = time.perf_counter()
        for module in request["imports"]:
            importlib.import_module(module)
        report["import_s"] = time.perf_counter() - start
        step = "load"
        module_name, function = request["loader"].split(":")
        loader = getattr(importlib.import_module(module_name), function)
        start = time.perf_counter()
        predict, report["runtime"], report["device"] = loader(
            Path(request["artifact"]), request["device"]
        )
        report["load_s"] = time.perf_counter() - start
        step = "run"
        images = np.load(request["probe"])
        if request["channels_first"]:
            images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        start = time.perf_counter()
        predict(images[:1])
        report["first_inference_s"] = time.perf_counter() - start
        for batch in BATCH_SIZES:
            durations = timed_calls(predict, images[:batch], request["warmup"], request["timed"])
            report[f"batch{batch}_p50_ms"], report[f"batch{batch}_p99_ms"] = p50_p99_ms(durations)
        np.save(request["outputs"], np.asarray(predict(images), dtype=np.float32))
    except Exception as exc:
        report["failed_step"] = step
        report["error"] = _message(exc)
        raise
    finally:
        Path(request["report"]).write_text(json.dumps(report))
    return report


def main(argv: list[str]) -> int:
    (request,) = argv
    try:
        serve(json.loads(request))
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
