"""One source of defaults: services/common/spec.py. Any client, the CLI included, gets the same
spec from the same unset fields, and what a person sets is never replaced."""

from __future__ import annotations

import pytest

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import cli
from orchestrator.inputs import options
from services.common import spec as specs


@pytest.mark.parametrize(
    ("architecture", "init"), [("canonical", "shared"), ("library", "framework")]
)
def test_init_follows_the_architecture_when_unset(architecture, init):
    spec = specs.with_defaults(
        pb.TrainSpec(model=pb.ModelSpec(name="vgg19", architecture=architecture))
    )
    assert spec.model.init == init
    specs.validate(spec)  # a library model without init is valid, from any client


def test_a_set_init_is_kept():
    spec = pb.TrainSpec(model=pb.ModelSpec(name="vgg19", init="framework"))
    assert specs.with_defaults(spec).model.init == "framework"


def test_the_command_line_sets_only_what_was_given():
    args = cli.parser().parse_args(
        ["run", "--out", "x", "--lr", "0.1", "--architecture", "library"]
    )
    spec = options.build_spec(args)
    assert spec.optimizer.learning_rate == 0.1
    assert spec.model.init == "framework"
    assert spec.epochs == specs.DEFAULTS["epochs"]
    assert spec.optimizer.momentum == specs.DEFAULTS["optimizer"]["momentum"]


def test_every_spec_option_shows_its_default():
    for option in options.SPEC_OPTIONS:
        if not option.is_flag and option.field not in options.UNSET_MEANS:
            specs.effective_default(option.field)  # a KeyError names a field without a default


def test_building_a_spec_for_each_model_leaves_the_base_alone():
    base = options.build_spec(cli.parser().parse_args(["run", "--out", "x"]))
    copies = [options.for_model(base, model) for model in specs.MODELS]
    assert [c.model.name for c in copies] == list(specs.MODELS)
    assert base.model.name == ""
