"""What a precision means for float32 arithmetic (services/common/numerics.py) and which one a run
gets: the spec's rules, the command line's and a suite file's, as pure logic. The frameworks apply
and record them in tests/test_frameworks.py."""

from __future__ import annotations

import pytest

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import cli
from orchestrator.inputs import options, suite_file
from services.common import numerics
from services.common import spec as specs


def test_native_touches_no_switch_and_every_other_precision_sets_all_of_them():
    assert numerics.tf32_switches("native") is None
    assert numerics.tf32_switches("tf32") is True
    assert [numerics.tf32_switches(p) for p in ("fp32", "bf16", "fp16")] == [False] * 3


@pytest.mark.parametrize(
    ("compute_capability", "recorded"),
    [
        (None, {"tf32_matmul": "n/a on cpu", "tf32_conv": "n/a on cpu"}),
        (
            (7, 0),
            {
                "tf32_matmul": "n/a on compute capability 7.0 (TF32 needs 8.0+)",
                "tf32_conv": "n/a on compute capability 7.0 (TF32 needs 8.0+)",
            },
        ),
        ((8, 0), {"tf32_matmul": "false", "tf32_conv": "true"}),
        ((9, 0), {"tf32_matmul": "false", "tf32_conv": "true"}),
    ],
)
def test_each_switch_is_recorded_as_held_where_the_device_has_tf32_else_why_not(
    compute_capability, recorded
):
    # PyTorch's own switches, as it ships: convolutions on, matrix products off.
    assert numerics.tf32_settings(False, True, compute_capability) == recorded


def spec_of(**fields) -> pb.TrainSpec:
    spec = specs.with_defaults(pb.TrainSpec(model=pb.ModelSpec(name="mobilenet_v2"), **fields))
    specs.validate(spec)
    return spec


def test_an_unset_precision_follows_the_mode():
    assert spec_of().precision == "native"
    assert spec_of(mode="default").precision == "native"
    assert spec_of(mode="tuned").precision == "tf32"


@pytest.mark.parametrize("mode", specs.MODES)
@pytest.mark.parametrize("precision", specs.PRECISIONS)
def test_a_set_precision_is_kept_in_every_mode(mode, precision):
    assert spec_of(mode=mode, precision=precision).precision == precision


def test_an_unknown_mode_is_named_not_the_precision_it_leaves_unset():
    spec = specs.with_defaults(pb.TrainSpec(model=pb.ModelSpec(name="vgg19"), mode="fast"))
    with pytest.raises(specs.SpecError) as error:
        specs.validate(spec)
    assert str(error.value) == "mode: 'fast' is not one of default, tuned"


@pytest.mark.parametrize(
    ("argv", "precision"),
    [
        ([], "native"),
        (["--mode", "tuned"], "tf32"),
        (["--mode", "tuned", "--precision", "fp32"], "fp32"),
        (["--mode", "tuned", "--precision", "native"], "native"),
        (["--precision", "tf32"], "tf32"),
    ],
)
def test_the_command_line_leaves_precision_to_the_mode_unless_it_is_given(argv, precision):
    args = cli.parser().parse_args(["run", "--out", "x", *argv])
    assert options.build_spec(args).precision == precision


@pytest.mark.parametrize(
    ("suite_spec", "argv", "precision"),
    [
        ("  mode: tuned\n", [], "tf32"),
        ("  precision: fp32\n", ["--mode", "tuned"], "fp32"),
        ("  mode: tuned\n", ["--precision", "native"], "native"),
    ],
)
def test_a_suites_precision_or_the_command_lines_is_kept_whatever_the_mode(
    tmp_path, suite_spec, argv, precision
):
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: x\nframeworks: [pytorch]\nmodels: [vgg19]\nspec:\n{suite_spec}")
    args = cli.parser().parse_args(["suite", str(path), *argv])
    assert options.build_spec(suite_file.run_arguments(args)).precision == precision


def test_help_says_what_precision_each_mode_trains_in():
    assert specs.effective_default("precision") == "native in mode default, tf32 in mode tuned"
