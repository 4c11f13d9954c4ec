"""Spec rules, dataset fit and step statistics as pure logic (services/common/spec.py, data.py,
recorder.py): fast, no service. The same rules reach clients through the services in
test_service.py and test_spec_properties.py."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

from fwbench.v1 import trainer_pb2 as pb
from services.common import datasets, limits
from services.common import spec as specs
from tests.conftest import ROOT


def checked(spec: pb.TrainSpec) -> pb.TrainSpec:
    spec = specs.with_defaults(spec)
    specs.validate(spec)
    return spec


def refusal(spec: pb.TrainSpec) -> str:
    with pytest.raises(specs.SpecError) as error:
        checked(spec)
    return str(error.value)


def named(**fields) -> pb.TrainSpec:
    return pb.TrainSpec(**({"model": pb.ModelSpec(name="mobilenet_v2")} | fields))


def test_unset_fields_take_the_defaults_and_set_ones_are_kept():
    spec = checked(named())
    assert (spec.epochs, spec.batch_size, spec.optimizer.learning_rate) == (5, 32, 0.01)
    assert spec.optimizer.momentum == 0.9
    assert not spec.model.HasField("num_classes"), "the dataset decides the class count"
    assert not spec.data.HasField("train_limit"), "unset limit means all samples"
    kept = checked(named(epochs=7, optimizer=pb.OptimizerSpec(momentum=0, learning_rate=0.5)))
    assert (kept.epochs, kept.optimizer.momentum, kept.optimizer.learning_rate) == (7, 0, 0.5)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (named(epochs=0), "epochs: must be in 1..1000, got 0"),
        (named(batch_size=0), "batch_size: must be in 2..65536, got 0"),
        (named(epochs=1001), "epochs: must be in 1..1000, got 1001"),
        (named(optimizer=pb.OptimizerSpec(learning_rate=0)), "optimizer.learning_rate"),
        (named(data=pb.DataSpec(train_limit=0)), "leave it unset for all samples"),
        (named(data=pb.DataSpec(test_limit=10_000_001)), "data.test_limit: must be in"),
        (named(model=pb.ModelSpec(name="vgg19", num_classes=0)), "model.num_classes: must be in"),
        (named(seed=2**32), "seed: must be in 0..4294967295"),
        (named(sample_interval_ms=60_001), "sample_interval_ms: must be in 0..60000"),
        (named(run_id="x" * 201), "run_id: at most 200 characters"),
        (named(data=pb.DataSpec(data_dir="/data/x")), "data.data_dir: only read when"),
    ],
)
def test_a_set_value_out_of_range_is_refused_never_replaced(spec, words):
    assert words in refusal(spec)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e300, -0.1])
@pytest.mark.parametrize("field", ["learning_rate", "weight_decay"])
def test_rates_must_be_finite_and_bounded(field, value):
    assert f"optimizer.{field}: must be a finite number in" in refusal(
        named(optimizer=pb.OptimizerSpec(**{field: value}))
    )


@pytest.mark.parametrize("field", ["momentum", "label_smoothing"])
@pytest.mark.parametrize("value", [math.nan, math.inf, 1.0, -0.5])
def test_fractions_must_be_finite_and_in_0_1(field, value):
    assert f"optimizer.{field}: must be a finite number in [0, 1)" in refusal(
        named(optimizer=pb.OptimizerSpec(**{field: value}))
    )


def test_init_follows_the_architecture_when_unset():
    library = checked(pb.TrainSpec(model=pb.ModelSpec(name="resnet50", architecture="library")))
    assert library.model.init == "framework"
    assert checked(named()).model.init == "shared"
    explicit = pb.TrainSpec(model=pb.ModelSpec(name="vgg19", architecture="library", init="shared"))
    assert "model.init: 'shared' initial weights need" in refusal(explicit)


def test_defaults_are_one_plain_dict_the_cli_can_show():
    assert specs.effective_default("optimizer.learning_rate") == 0.01
    assert specs.effective_default("epochs") == 5
    assert "framework for library models" in specs.effective_default("model.init")
    assert json.dumps(specs.DEFAULTS)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"probe_batch_size": 0}, "probe_batch_size: must be in 1..1024, got 0"),
        ({"probe_batch_size": -1}, "probe_batch_size: must be in 1..1024, got -1"),
        ({"train_steps": -5}, "train_steps: must be in 0..1000, got -5"),
        ({"train_steps": 1_000_000}, "train_steps: must be in 0..1000"),
        ({"probe_batch_size": 1, "train_steps": 2}, "training steps need at least 2"),
    ],
)
def test_inspect_fields_are_bounded(fields, words):
    request = specs.inspect_with_defaults(pb.InspectRequest(spec=named(), **fields))
    with pytest.raises(specs.SpecError, match=words):
        specs.validate_inspect(request)


def test_an_inspect_over_its_logits_budget_is_refused_naming_the_budget_and_its_cost():
    # Both fields in bounds, their product 410 MB of reply and ~6 GB in the worker.
    request = specs.inspect_with_defaults(
        pb.InspectRequest(spec=named(model=pb.ModelSpec(name="mobilenet_v2", num_classes=100_000)))
    )
    request.probe_batch_size = 1024
    with pytest.raises(specs.SpecError) as error:
        specs.validate_inspect(request)
    assert str(error.value) == (
        "probe_batch_size x model.num_classes: 1024 x 100000 = 102,400,000 probe logits "
        "(409.6 MB of reply), over Inspect's budget of 524,288 logits (2 MiB); use "
        "probe_batch_size <= 5 with 100000 classes"
    )
    request.probe_batch_size = 5
    specs.validate_inspect(request)


def test_inspect_without_a_dataset_gets_synthetics_ten_classes():
    request = specs.inspect_with_defaults(pb.InspectRequest(spec=named()))
    assert (request.probe_batch_size, request.spec.model.num_classes) == (8, 10)


# --- the dataset decides classes and sizes -------------------------------------------------


def prepared(root, classes: int = 3, train: int = 12, test: int = 6, name: str = "tiny"):
    rng = np.random.default_rng(0)
    arrays = {
        f"{split}_images": rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
        for split, n in (("train", train), ("test", test))
    } | {
        f"{split}_labels": np.arange(n, dtype=np.int64) % classes
        for split, n in (("train", train), ("test", test))
    }
    out = root / name
    datasets.write(out, arrays, [f"c{i}" for i in range(classes)], name, {"source": "test"})
    return out


def directory(path, **fields) -> pb.TrainSpec:
    spec = specs.with_defaults(
        pb.TrainSpec(
            model=pb.ModelSpec(name="mobilenet_v2"),
            data=pb.DataSpec(source="directory", data_dir=str(path)),
            batch_size=4,
        )
    )
    for name, value in fields.items():
        target, _, leaf = name.rpartition("__")
        setattr(spec.data if target == "data" else spec.model, leaf, value)
    return spec


@pytest.mark.parametrize(
    ("data_dir", "words"),
    [
        # 128 two-byte characters: 256 bytes, over the file system's 255 per name.
        ("/data/" + "é" * 128 + "/cifar10", "'éééééééééééééééééééé'… is 256 bytes; each name"),
        ("/data/" + "x" * 256, "at most 255 bytes (UTF-8), the file system's limit"),
        ("/d" + "/x" * 2047, "a path of at most 4095 bytes (UTF-8), got 4096 bytes"),
    ],
    ids=["a-name-of-256-bytes-in-128-characters", "a-name-of-256-bytes", "a-path-of-4096-bytes"],
)
def test_a_data_path_beyond_the_file_systems_limits_is_refused_naming_the_limit(data_dir, words):
    spec = named(data=pb.DataSpec(source="directory", data_dir=data_dir))
    assert refusal(spec).startswith("data.data_dir: ")
    assert words in refusal(spec)


def test_a_data_path_at_the_file_systems_limits_is_valid():
    checked(named(data=pb.DataSpec(source="directory", data_dir="/data/" + "é" * 127 + "x")))
    checked(named(data=pb.DataSpec(source="directory", data_dir="/d" + "/x" * 2046 + "y")))


def test_the_proto_states_the_limits_the_service_enforces():
    comments = " ".join(
        line.strip().removeprefix("//").strip()
        for line in (ROOT / "proto" / "fwbench" / "v1" / "trainer.proto").read_text().splitlines()
    )
    for stated in (
        f"at most {specs.MAX_PROBE_LOGITS} logits",
        f"at most {specs.MAX_PATH_BYTES} bytes in UTF-8",
        f"at most {specs.MAX_NAME_BYTES} bytes",
        f"at most {limits.MAX_REFLECTION_STREAMS} server-reflection streams",
        f"and {limits.MAX_HEALTH_WATCHES} grpc.health.v1 Watch streams",
    ):
        assert stated in comments


def test_the_class_count_comes_from_the_dataset(tmp_path):
    spec = directory(prepared(tmp_path))
    datasets.check(spec, [tmp_path])
    assert spec.model.num_classes == 3
    wrong = directory(prepared(tmp_path, classes=12, name="twelve"), model__num_classes=10)
    with pytest.raises(specs.SpecError, match="10 does not match the 12 classes"):
        datasets.check(wrong, [tmp_path])


def test_limits_beyond_the_dataset_name_its_size(tmp_path):
    spec = directory(prepared(tmp_path), data__train_limit=13)
    with pytest.raises(specs.SpecError, match="13 is more than the 12 train samples"):
        datasets.check(spec, [tmp_path])
    synthetic = specs.with_defaults(named(data=pb.DataSpec(test_limit=10_001)))
    with pytest.raises(specs.SpecError, match="10001 is more than the 10000 test samples"):
        datasets.check(synthetic, [])


def test_a_last_batch_of_one_sample_is_refused(tmp_path):
    spec = directory(prepared(tmp_path), data__train_limit=9)  # batches of 4: 4, 4, 1
    with pytest.raises(specs.SpecError, match="leave a last batch of 1 sample"):
        datasets.check(spec, [tmp_path])


def test_data_outside_the_roots_is_refused_naming_them(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    prepared(outside)
    (root / "link").symlink_to(outside / "tiny")
    for path in (outside / "tiny", root / ".." / "outside" / "tiny", root / "link"):
        with pytest.raises(datasets.DataAccessError, match=f"outside the data roots .*{root}"):
            datasets.check(directory(path), [root])


def test_meta_json_may_name_only_files_beside_it(tmp_path):
    path = prepared(tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    meta["arrays"]["train_labels"]["file"] = "/etc/hostname"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(datasets.DataAccessError, match="may name only files beside it"):
        datasets.check(directory(path), [tmp_path])


def test_labels_outside_the_head_are_refused_when_loaded(tmp_path):
    # The arrays keep their checksums; meta.json claims fewer classes than the labels use.
    path = prepared(tmp_path, classes=3)
    meta = json.loads((path / "meta.json").read_text())
    meta["classes"] = ["c0", "c1"]
    (path / "meta.json").write_text(json.dumps(meta))
    spec = directory(path)
    datasets.check(spec, [tmp_path])
    with pytest.raises(datasets.DataError, match=r"train_labels fall outside 0\.\.1"):
        datasets.load(spec)


# --- statistics ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "samples", [[0.010, 0.030], [0.02] * 9 + [0.05], [0.01, 0.01, 0.01, 0.2], [0.5]]
)
def test_p90_is_never_below_the_median(samples):
    from services.common.recorder import median_and_p90

    median, p90 = median_and_p90(samples)
    assert median == statistics.median(samples)
    assert p90 >= median
    assert p90 == pytest.approx(float(np.percentile(samples, 90)))
