"""What every framework service does, one test body for both frameworks: each runs behind its own
real gRPC server with workers in its own virtualenv (.venvs/pytorch, .venvs/tensorflow)."""

from __future__ import annotations

import grpc
import pytest

from fwbench.v1 import trainer_pb2 as pb
from services.common import data as datasets
from tests.conftest import FRAMEWORKS, tiny_spec

# Every test here trains or serves through a framework environment.
pytestmark = pytest.mark.framework

# 1024 samples x 2 epochs at batch 32 = 64 optimiser steps: about what BatchNorm's running
# statistics need to settle, below which eval-mode accuracy stays at chance however well the
# model fits. Kept that small because TensorFlow's first step (tracing) alone takes 5-20 s here.
LEARNABLE = {"epochs": 2, "data__train_limit": 1024, "data__test_limit": 256}
CHANCE = 0.1
TRAIN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def described(stub):
    """described("pytorch") -> its DescribeResponse, asked once per module."""
    cache: dict[str, pb.DescribeResponse] = {}

    def get(framework: str) -> pb.DescribeResponse:
        if framework not in cache:
            cache[framework] = stub(framework).Describe(pb.DescribeRequest(), timeout=120)
        return cache[framework]

    return get


@pytest.fixture(scope="module")
def trained(stub):
    """trained("pytorch") -> the events of one LEARNABLE run (telemetry left out): one training
    run per framework serves every test that reads a run."""
    cache: dict[str, list[pb.TrainEvent]] = {}

    def get(framework: str) -> list[pb.TrainEvent]:
        if framework not in cache:
            request = pb.TrainRequest(spec=tiny_spec(**LEARNABLE))
            cache[framework] = [
                event
                for event in stub(framework).Train(request, timeout=TRAIN_TIMEOUT_S)
                if event.WhichOneof("event") != "telemetry"
            ]
        return cache[framework]

    return get


def of_kind(events: list[pb.TrainEvent], kind: str) -> list:
    return [getattr(e, kind) for e in events if e.WhichOneof("event") == kind]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_describe_reports_the_framework_and_its_environment(described, framework):
    d = described(framework)
    assert d.framework == framework
    assert d.framework_version
    assert d.python_version.count(".") == 2
    assert d.devices[0] == "cpu"
    assert all(device.startswith("cuda:") for device in d.devices[1:])
    assert d.import_s > 0
    assert d.library_versions["numpy"]
    assert d.hostname


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_inspect_reports_the_model_and_its_probe_logits(stub, framework):
    spec = tiny_spec()
    report = stub(framework).Inspect(pb.InspectRequest(spec=spec, probe_batch_size=4), timeout=120)
    assert report.framework == framework
    assert report.model == "mobilenet_v2"
    assert report.trainable_params > 0
    assert report.probe_batch_size == 4
    assert len(report.probe_logits) == 4 * spec.model.num_classes


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_train_streams_run_started_progress_epochs_then_run_end(trained, framework):
    events = trained(framework)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_end"
    assert kinds.count("run_started") == kinds.count("run_end") == 1
    assert [e.t_s for e in events] == sorted(e.t_s for e in events)

    started = events[0].run_started
    assert started.framework == framework
    assert (started.train_samples, started.test_samples, started.steps_per_epoch) == (1024, 256, 32)
    assert started.settings["precision"] == "fp32"
    assert started.settings["weight_decay"] == "coupled-l2"

    # Each epoch: progress up to its last step, then its EpochEnd.
    epoch_ends = [i for i, kind in enumerate(kinds) if kind == "epoch_end"]
    assert [events[i].epoch_end.epoch for i in epoch_ends] == [0, 1]
    for epoch, (begin, end) in enumerate(zip([0, *epoch_ends[:-1]], epoch_ends, strict=True)):
        progress = of_kind(events[begin:end], "progress")
        assert progress, f"no progress in epoch {epoch}"
        assert {p.epoch for p in progress} == {epoch}
        assert [p.step for p in progress] == sorted({p.step for p in progress})
        assert progress[-1].step == started.steps_per_epoch

    for e in of_kind(events, "epoch_end"):
        assert e.train_time_s > 0 and e.eval_time_s > 0
        assert e.between_epoch_overhead_s >= 0
        assert e.epoch_time_s == pytest.approx(
            e.train_time_s + e.eval_time_s + e.between_epoch_overhead_s
        )
    end = events[-1].run_end
    assert end.epochs_completed == 2
    assert 0 < end.first_step_s < end.time_to_first_step_s < end.total_time_s
    assert end.step_time_median_s > 0
    assert end.final_test_accuracy == events[epoch_ends[-1]].epoch_end.test_accuracy


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_training_beats_chance_in_eval_mode(trained, framework):
    epochs = of_kind(trained(framework), "epoch_end")
    assert epochs[-1].train_loss < epochs[0].train_loss
    assert epochs[-1].test_accuracy > 3 * CHANCE


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_invalid_field_is_invalid_argument_naming_it(stub, framework):
    spec = tiny_spec(optimizer__learning_rate=-0.1)
    with pytest.raises(grpc.RpcError) as error:
        list(stub(framework).Train(pb.TrainRequest(spec=spec), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "optimizer.learning_rate: must be > 0 and <= 100, got -0.1" in error.value.details()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cuda_without_a_gpu_is_invalid_argument_saying_what_to_use(stub, described, framework):
    if len(described(framework).devices) > 1:
        pytest.skip(f"{framework} sees a GPU here")
    with pytest.raises(grpc.RpcError) as error:
        list(stub(framework).Train(pb.TrainRequest(spec=tiny_spec(device="cuda")), timeout=120))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.value.details()
    assert "device: 'cuda' was requested but" in details
    assert "use device 'cpu' or 'auto'" in details


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_tuned_mode_trains_the_same_job_to_the_same_accuracy(stub, framework):
    # The same data, batches, optimizer and precision: accuracy agrees with the default mode's
    # within the noise of 256 test images; the resolved settings say what tuned changed.
    accuracy, settings = {}, {}
    for mode in ("default", "tuned"):
        spec = tiny_spec(mode=mode, epochs=2, data__train_limit=1000, data__test_limit=256)
        events = list(stub(framework).Train(pb.TrainRequest(spec=spec), timeout=900))
        settings[mode] = events[0].run_started.settings
        accuracy[mode] = events[-1].run_end.final_test_accuracy
        assert events[-1].run_end.epochs_completed == 2
    assert settings["tuned"]["mode"] == "tuned" and settings["default"]["mode"] == "default"
    assert accuracy["default"] > 0.3
    assert abs(accuracy["tuned"] - accuracy["default"]) <= 0.1, accuracy


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_loss_that_stops_being_a_number_ends_the_run_as_diverged(stub, framework):
    # A learning rate at the top of its range blows VGG19 (no BatchNorm) up within a few steps.
    spec = tiny_spec(
        "vgg19",
        optimizer__learning_rate=100.0,
        epochs=2,
        data__train_limit=256,
        sample_interval_ms=0,
    )
    events = list(stub(framework).Train(pb.TrainRequest(spec=spec), timeout=300))
    end = events[-1].run_end
    assert end.status == "diverged"
    assert end.HasField("diverged_epoch") and end.diverged_first_step <= end.diverged_last_step
    assert end.epochs_completed <= end.diverged_epoch  # training stopped where it diverged
    assert not [
        e for e in events if e.HasField("epoch_end") and e.epoch_end.epoch > end.diverged_epoch
    ]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_head_that_does_not_match_the_data_is_refused_before_training(stub, framework, tmp_path):
    images, labels = datasets.synthetic_split(0, 1, 64)
    data = tmp_path / "three"
    datasets.write(
        data,
        {"train_images": images, "train_labels": labels % 3, "test_images": images[:32],
         "test_labels": labels[:32] % 3},
        ["a", "b", "c"], "three", {},
    )  # fmt: skip
    spec = tiny_spec(data__source="directory", data__data_dir=str(data))  # num_classes 10
    with pytest.raises(grpc.RpcError) as error:
        list(stub(framework).Train(pb.TrainRequest(spec=spec), timeout=120))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model.num_classes: 10 does not match the 3 classes" in error.value.details()
    spec = tiny_spec(data__source="directory", data__data_dir=str(data), data__test_limit=33)
    with pytest.raises(grpc.RpcError) as error:
        list(stub(framework).Train(pb.TrainRequest(spec=spec), timeout=120))
    assert "data.test_limit: 33 is more than the 32 test images" in error.value.details()
