"""One validation for every client: a value a person set is never replaced by a default, every
number is finite and in range, and an error names its field."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwbench.v1 import trainer_pb2 as pb
from services.common import recorder
from services.common import spec as specs

FIELDS = {
    "model.name", "model.architecture", "model.init", "model.num_classes", "data.source",
    "data.data_dir", "data.train_limit", "data.test_limit", "data.augment", "optimizer.name",
    "optimizer.learning_rate", "optimizer.momentum", "optimizer.nesterov",
    "optimizer.weight_decay", "optimizer.lr_schedule", "optimizer.label_smoothing", "epochs",
    "batch_size", "device", "precision", "mode", "sample_interval_ms",
}  # fmt: skip


def checked(**fields) -> pb.TrainSpec:
    spec = pb.TrainSpec(model=pb.ModelSpec(name="vgg19"))
    for path, value in fields.items():
        *parents, name = path.split("__")
        message = spec
        for part in parents:
            message = getattr(message, part)
        setattr(message, name, value)
    spec = specs.with_defaults(spec)
    specs.validate(spec)
    return spec


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "epochs: must be in [1, 10000], got 0"),
        ("batch_size", 0, "batch_size: must be in [1, 65536], got 0"),
        ("optimizer__learning_rate", 0.0, "optimizer.learning_rate: must be > 0"),
        ("model__num_classes", 0, "model.num_classes: must be in [2, 100000], got 0"),
    ],
)
def test_a_set_zero_is_refused_never_replaced_by_the_default(field, value, message):
    with pytest.raises(specs.SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        checked(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("optimizer__learning_rate", math.inf),
        ("optimizer__learning_rate", math.nan),
        ("optimizer__learning_rate", 1e300),
        ("optimizer__weight_decay", math.nan),
        ("optimizer__weight_decay", math.inf),
        ("optimizer__weight_decay", -math.inf),
        ("optimizer__momentum", math.nan),
        ("optimizer__label_smoothing", math.nan),
        ("epochs", 10**6),
        ("data__train_limit", 10**9),
        ("sample_interval_ms", -1),
    ],
)
def test_numbers_that_are_not_finite_or_in_range_are_refused(field, value):
    with pytest.raises(specs.SpecError, match=field.replace("__", ".")):
        checked(**{field: value})


def test_unset_fields_take_the_defaults():
    spec = checked()
    assert (spec.epochs, spec.batch_size) == (
        specs.DEFAULTS["epochs"],
        specs.DEFAULTS["batch_size"],
    )
    assert spec.optimizer.learning_rate == specs.DEFAULTS["optimizer"]["learning_rate"]
    assert spec.model.num_classes == specs.DEFAULTS["model"]["num_classes"]


def test_inspect_fields_are_bounded():
    specs.validate_inspect(8, 0)
    for probe, steps in ((0, 0), (-1, 0), (2000, 0), (8, -5), (8, 10**6)):
        with pytest.raises(specs.SpecError):
            specs.validate_inspect(probe, steps)


@settings(max_examples=300, deadline=None)
@given(
    epochs=st.integers(-5, 2**31 - 1),
    batch_size=st.integers(-5, 2**31 - 1),
    lr=st.floats(allow_nan=True, allow_infinity=True),
    weight_decay=st.floats(allow_nan=True, allow_infinity=True),
    momentum=st.floats(allow_nan=True, allow_infinity=True),
    smoothing=st.floats(allow_nan=True, allow_infinity=True),
    limit=st.integers(-(2**31), 2**31 - 1),
    classes=st.integers(-(2**31), 2**31 - 1),
    name=st.sampled_from([*specs.MODELS, "resnet18", ""]),
)
def test_any_spec_is_valid_or_an_error_naming_a_field(
    epochs, batch_size, lr, weight_decay, momentum, smoothing, limit, classes, name
):
    spec = pb.TrainSpec(
        model=pb.ModelSpec(name=name, num_classes=classes),
        data=pb.DataSpec(train_limit=limit),
        optimizer=pb.OptimizerSpec(
            learning_rate=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            label_smoothing=smoothing,
        ),
        epochs=epochs,
        batch_size=batch_size,
    )
    try:
        specs.validate(specs.with_defaults(spec))
    except specs.SpecError as e:
        assert str(e).split(":")[0] in FIELDS
        return
    # Valid: every number is finite and inside its bounds.
    assert 1 <= epochs <= specs.MAX_EPOCHS and 1 <= batch_size <= specs.MAX_BATCH_SIZE
    assert 0 < lr <= specs.MAX_LEARNING_RATE and 0 <= weight_decay <= specs.MAX_WEIGHT_DECAY
    assert 0 <= momentum < 1 and 0 <= smoothing < 1 and 2 <= classes <= specs.MAX_CLASSES


def test_p90_is_never_below_the_median():
    assert recorder.quantile([1.0, 2.0], 0.9) == pytest.approx(1.9)
    assert recorder.quantile([5.0], 0.9) == 5.0
    values = [0.01, 0.03, 0.02, 0.05]
    assert recorder.quantile(values, 0.9) >= recorder.quantile(values, 0.5)
