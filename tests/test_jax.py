"""What only the JAX service has to get right, through its real service: Optax transforms with
torch.optim's semantics (checked by the losses of training steps from the shared weights, against
PyTorch), and the knobs JAX resolves its own way (it always compiles; fp32 means XLA's 'highest'
matmul precision; bf16 and fp16 compute in half precision on float32 parameters), and the tuned
mode's loop of several steps per dispatch training the very batches the default mode trains."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.running import parity_check
from services.common import schedule
from tests.conftest import once_in_make_test, tiny_spec

# Every test here talks to the JAX service (and PyTorch's).
pytestmark = pytest.mark.framework

PROBE_BATCH = 32
# Three steps: the losses of steps 2 and 3 follow the first two updates, so that momentum,
# Nesterov, the schedule's second learning rate and weight decay all shape them.
TRAIN_STEPS = 3
# Each optimiser with what tells it apart: weight decay large enough to move the loss where it is
# applied wrongly (coupled vs decoupled, before vs after the optimiser's own transform).
OPTIMIZERS = {
    "sgd-nesterov-l2-cosine-smoothing": {
        "optimizer__name": "sgd",
        "optimizer__learning_rate": 0.05,
        "optimizer__nesterov": True,
        "optimizer__weight_decay": 0.05,
        "optimizer__lr_schedule": "cosine",
        "optimizer__label_smoothing": 0.1,
    },
    "adam-coupled-l2": {
        "optimizer__name": "adam",
        "optimizer__learning_rate": 1e-3,
        "optimizer__weight_decay": 0.5,
    },
    "adamw-decoupled": {
        "optimizer__name": "adamw",
        "optimizer__learning_rate": 1e-3,
        "optimizer__weight_decay": 0.5,
    },
}


# The job that the tuned mode's batches are checked on (below): 34 steps of batch 8, that is a
# dispatch of TUNED_STEPS_PER_EXECUTION (32) batches, one of the full batch left over, and the
# short last batch of 4 alone. At a learning rate of 1e-9 the weights do not move beyond float
# rounding, so each step's loss is its batch's alone. Not smaller: at batch 4 (a short batch of
# 2) the two modes' epoch sums were 1.3e-5 apart, BatchNorm over so few images amplifying the
# two programs' rounding; at batch 8 they are equal. In strict fp32 and with compile off: the
# default mode's run proves those settings too (one JAX run fewer).
BATCHES_JOB = {
    "model": "mobilenet",
    "batch_size": 8,
    "data__train_limit": 268,
    # 8 full test batches and a short one of 4: the tuned evaluation's every case.
    "data__test_limit": 68,
    "optimizer__learning_rate": 1e-9,
    "precision": "fp32",
    "compile": False,
}


def train_events(trained_once, **overrides) -> list[pb.TrainEvent]:
    """The events of a run of tiny_spec(**overrides) (telemetry left out), once per session."""
    events = trained_once("jax", tiny_spec(**overrides))
    return [event for event in events if event.WhichOneof("event") != "telemetry"]


# Each optimizer is a matrix entry: SGD (with every option on) in `make test`.
@pytest.mark.parametrize(
    "optimizer", once_in_make_test(OPTIMIZERS, "sgd-nesterov-l2-cosine-smoothing")
)
def test_optax_steps_match_torch_optim(stub, optimizer):
    spec = tiny_spec("mobilenet_v2", **OPTIMIZERS[optimizer])
    request = pb.InspectRequest(spec=spec, probe_batch_size=PROBE_BATCH, train_steps=TRAIN_STEPS)
    losses = {
        framework: list(stub(framework).Inspect(request, timeout=600).probe_train_losses)
        for framework in ("pytorch", "jax")
    }
    assert len(losses["jax"]) == TRAIN_STEPS
    assert losses["jax"][-1] < losses["jax"][0]
    np.testing.assert_allclose(
        losses["jax"], losses["pytorch"], rtol=0, atol=parity_check.LOSS_TOLERANCE
    )


def test_fp32_is_strict_and_compile_false_still_compiles(trained_once):
    # The default mode's run of BATCHES_JOB, which sets precision fp32 and compile False.
    events = train_events(trained_once, mode="default", **BATCHES_JOB)
    settings = events[0].run_started.settings
    assert settings["matmul_precision"] == "highest"
    # On the CPU no TF32 switch changes anything, and the record says so.
    assert settings["tf32_matmul"] == settings["tf32_conv"] == "n/a on cpu"
    assert settings["compute_dtype"] == "float32"
    # The spec's choice is recorded as not applicable, never silently replaced.
    assert settings["compile"] == "xla (nnx.jit; JAX always compiles)"
    # The tests' compilation cache (conftest) is on, and the run says so.
    assert settings["compilation_cache"] == os.environ["JAX_COMPILATION_CACHE_DIR"]
    end = events[-1].run_end
    assert end.first_step_s > 0 and end.epochs_completed == 1


@pytest.mark.parametrize(
    ("precision", "compute_dtype", "loss_scale"),
    [
        # fp16, with its dynamic loss scaling, in `make test`; bf16 is the same path without it.
        pytest.param("bf16", "bfloat16", "none", marks=pytest.mark.slow),
        ("fp16", "float16", "dynamic"),
    ],
)
def test_half_precision_trains_with_finite_losses(
    trained_once, precision, compute_dtype, loss_scale
):
    events = train_events(trained_once, precision=precision)
    settings = events[0].run_started.settings
    assert (settings["compute_dtype"], settings["loss_scale"]) == (compute_dtype, loss_scale)
    assert settings["matmul_precision"] == "default"
    [_, epoch] = [e.epoch_end for e in events if e.WhichOneof("event") == "epoch_end"]
    assert math.isfinite(epoch.train_loss) and math.isfinite(epoch.test_loss)
    # Cross-entropy of 10 classes starts near ln 10; a broken half-precision path (overflowing
    # logits, unscaled gradients applied) lands far from it.
    assert abs(epoch.train_loss - math.log(10)) < 1.0


def test_tuned_trains_and_evaluates_the_same_batches_as_default_each_once_the_short_ones_included(
    trained_once,
):
    # BATCHES_JOB in both modes, the same precision: equal epoch sums (and correct counts) say
    # that tuned trained the same batches as default, each exactly once, with none dropped,
    # padded or repeated; equal test losses and accuracies, before training and after, say the
    # same of its evaluation (one compiled call over the test split, where default calls nnx.jit
    # per test batch). (That the trajectories agree at a learning rate that trains is
    # test_frameworks' test_tuned_mode_trains_the_same_job_...; compiled programs that sum in
    # another order make small-batch SGD diverge from float rounding within a few steps, so no
    # tight tolerance holds there.)
    samples, batch = BATCHES_JOB["data__train_limit"], BATCHES_JOB["batch_size"]
    assert schedule.executions(samples, batch, schedule.TUNED_STEPS_PER_EXECUTION) == [
        (0, 32),
        (32, 1),
        (33, 1),
    ]
    assert samples % batch == 4  # the short last batch
    epochs = {}
    for mode in ("default", "tuned"):
        events = train_events(trained_once, mode=mode, **BATCHES_JOB)
        settings = events[0].run_started.settings
        assert settings["steps_per_execution"] == str(schedule.steps_per_execution(mode))
        evaluation = settings["evaluation"]
        assert ("one compiled program" in evaluation) == (mode == "tuned"), evaluation
        # Tuned records the epoch's three programs, which it compiles in its first call (and
        # trains with: the sums below are theirs).
        compiled = settings.get("compiled_ahead")
        assert compiled == ("steps × batch size: 1 × 4, 1 × 8, 32 × 8" if mode == "tuned" else None)
        epochs[mode] = [e.epoch_end for e in events if e.WhichOneof("event") == "epoch_end"]
    [default_before, default], [tuned_before, tuned] = epochs["default"], epochs["tuned"]
    assert default_before.before_training and tuned_before.before_training
    # float32 sums of 34 losses in another order: rounding, within 1e-6 relative.
    assert tuned.train_loss == pytest.approx(default.train_loss, rel=1e-6, abs=0)
    assert tuned.train_accuracy == default.train_accuracy
    for tuned_epoch, default_epoch in ((tuned_before, default_before), (tuned, default)):
        assert tuned_epoch.test_loss == pytest.approx(default_epoch.test_loss, rel=1e-6, abs=0)
        assert tuned_epoch.test_accuracy == default_epoch.test_accuracy
