"""--gpus N: one run over N devices in data parallel. The global batch is --batch-size, cut from
the shared schedule so that N devices train on the images one device does, in the same order;
what cannot run is refused before any service starts (exit 2)."""

from __future__ import annotations

import pytest

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.commands import common
from services.common import schedule
from services.common import spec as specs
from tests.conftest import once_in_make_test, tiny_spec
from tests.test_cli import refused


@pytest.mark.parametrize("devices", [1, 2, 4])
@pytest.mark.parametrize(("train_samples", "batch_size"), [(64, 32), (72, 32), (100, 20)])
def test_the_devices_shares_of_a_batch_are_the_batch_in_order(train_samples, batch_size, devices):
    if schedule.uneven_last_batch(train_samples, batch_size, devices):
        pytest.skip("refused by the spec's checks")
    for k in range(schedule.steps_per_epoch(train_samples, batch_size)):
        whole = range(train_samples)[k * batch_size : (k + 1) * batch_size]
        shares = [
            range(train_samples)[schedule.device_rows(k, batch_size, train_samples, devices, d)]
            for d in range(devices)
        ]
        assert [i for share in shares for i in share] == list(whole)
        assert len({len(share) for share in shares}) == 1


def test_one_device_is_the_default_and_takes_the_whole_batch():
    assert specs.with_defaults(specs.pb.TrainSpec()).gpus == 1
    assert schedule.device_rows(3, 32, 200, 1, 0) == slice(96, 128)


def test_a_batch_the_devices_cannot_share_evenly_is_refused_naming_batches_that_work(tmp_path):
    out = tmp_path / "out"
    message = refused("run", "--gpus", "4", "--device", "cpu", "--batch-size", "30", "--out", out)
    assert "batch_size: 30 is the global batch" in message
    assert "use batch_size 28 or 32" in message
    assert not out.exists()


def test_a_last_batch_the_devices_cannot_share_evenly_is_refused(tmp_path):
    out = tmp_path / "out"
    argv = ["run", "--gpus", "4", "--device", "cpu", "--train-limit", "50", "--out", out]
    message = refused(*argv)
    assert "the last batch of every epoch would hold 18 images" in message
    assert "use --train-limit 48" in message
    assert not out.exists()


@pytest.mark.skipif(common.gpu_count() >= 2, reason="this machine has the GPUs")
def test_gpus_beyond_the_machines_are_refused_before_any_service_starts(tmp_path):
    out = tmp_path / "out"
    message = refused("run", "--gpus", "2", "--out", out)
    assert "--gpus 2: one run trains on 2 GPUs; this machine has" in message
    assert "or --device cpu to stand 2 CPU devices in for them" in message
    assert not out.exists()


@pytest.mark.skipif(common.gpu_count() >= 4, reason="this machine has the GPUs")
def test_parallel_services_of_several_gpus_each_need_every_gpu_of_every_group(tmp_path):
    out = tmp_path / "out"
    message = refused("run", "--parallel", "2", "--gpus", "2", "--out", out)
    assert (
        "--parallel 2 with --gpus 2 starts one service per framework on each of 2 groups "
        "of 2 GPUs (4 in all)"
    ) in message
    assert not out.exists()


# One device against two on the same global batch: the same arithmetic but for the order of
# additions (the gradients' and BatchNorm's sums are split across devices, then added) and for
# BatchNorm's formula where it is synchronised (TensorFlow's E[x²] - E[x]²). Measured on this job
# (MobileNetV2, 2 SGD steps, 2026-12-05): relative loss differences of 7e-6 (PyTorch), 0 (JAX),
# 2e-5 (TensorFlow; 3e-4 with MobileNet v1); float32 rounding grows as training goes on (after 4
# steps: 3e-4, 3e-6, 6e-4).
LOSS_TOLERANCE = 1e-4


def trained(trained_once, framework: str, **overrides) -> list[pb.TrainEvent]:
    # Once per session (conftest): the one-device run is test_deploy's run without --deploy too.
    return trained_once(framework, tiny_spec("mobilenet_v2", **overrides))


def of_kind(events: list[pb.TrainEvent], kind: str) -> list:
    return [getattr(e, kind) for e in events if e.WhichOneof("event") == kind]


@pytest.mark.framework
# TensorFlow's MirroredStrategy (55 s on 2 cores) in `make test-slow`.
@pytest.mark.parametrize(
    "framework", once_in_make_test(["pytorch", "jax", "tensorflow"], "pytorch", "jax")
)
def test_two_devices_train_to_the_loss_and_predictions_of_one_on_the_global_batch(
    trained_once, framework
):
    one, two = trained(trained_once, framework, gpus=1), trained(trained_once, framework, gpus=2)
    # The baseline (epoch 0, the shared initial weights evaluated) and the one trained epoch.
    (base_one, epoch_one), (base_two, epoch_two) = (
        of_kind(one, "epoch_end"),
        of_kind(two, "epoch_end"),
    )
    assert base_one.before_training and base_two.before_training
    assert base_two.test_loss == pytest.approx(base_one.test_loss, rel=LOSS_TOLERANCE)
    for field in ("train_loss", "test_loss"):
        # The test loss is a function of every weight after the last step: the weights compared.
        expected = getattr(epoch_one, field)
        assert getattr(epoch_two, field) == pytest.approx(expected, rel=LOSS_TOLERANCE), field
    assert epoch_two.train_accuracy == epoch_one.train_accuracy
    (end_one,), (end_two,) = of_kind(one, "run_end"), of_kind(two, "run_end")
    assert end_two.test_correct == end_one.test_correct
    (started,) = of_kind(two, "run_started")
    assert started.per_device_batch_size == 16
    samples = [s for batch in of_kind(two, "telemetry") for s in batch.samples]
    assert {s.device_index for s in samples} == {0, 1}
