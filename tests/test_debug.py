"""Debug probes: the same mistakes injected into the same small job in every framework, and what
each framework really does with them — through the real services and the real CLI; the shared
injection and the tables directly."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.commands import debug_probe
from orchestrator.report import debugging
from orchestrator.results import schema
from services.common import datasets, injection, schedule
from services.common.spec import SpecError, validate
from tests.conftest import FRAMEWORKS, fwbench, once_in_make_test, tiny_spec

# What each framework really does with each probe in graph execution (what users run), on the
# CPU, as measured (see docs/debugging.md). A change here is a finding, not a test to bend.
GRAPH_OUTCOMES = {
    "pytorch": {
        "head_classes": "silent",
        "float_labels": "error",
        "labels_out_of_range": "error",
        "nan_input": "nan",
        "diverging_lr": "nan",
        "channel_order": "error",
    },
    "tensorflow": {
        "head_classes": "error",
        "float_labels": "error",
        "labels_out_of_range": "silent",
        "nan_input": "nan",
        "diverging_lr": "nan",
        "channel_order": "error",
    },
    "jax": {
        "head_classes": "silent",
        # Training takes float labels (one_hot compares them); evaluation's integer-label loss
        # raises, after every training step ran.
        "float_labels": "error",
        "labels_out_of_range": "silent",
        "nan_input": "nan",
        "diverging_lr": "nan",
        "channel_order": "error",
    },
}


def job(**overrides) -> pb.TrainSpec:
    """fwbench debug-probe's default job: MobileNetV2, 4 steps of batch 8. (diverging_lr's loss
    overflows at the third step; MobileNet v1's BatchNorms keep it finite, if huge, for 4.)"""
    values = {"data__train_limit": 32, "data__test_limit": 16, "batch_size": 8}
    values |= {"sample_interval_ms": 0} | overrides
    return tiny_spec("mobilenet_v2", **values)


# ---- the shared injection, framework-free --------------------------------------------------------


def test_an_empty_request_runs_every_probe_in_both_modes():
    assert injection.check_request([], []) == (list(injection.NAMES), ["graph", "eager"])


@pytest.mark.parametrize(
    ("probes", "executions", "named"),
    [(["nope"], [], "probes: 'nope' not one of head_classes"), ([], ["jit"], "executions: 'jit'")],
)
def test_an_unknown_probe_or_mode_is_refused_naming_the_known_ones(probes, executions, named):
    with pytest.raises(SpecError, match=re.escape(named)):
        injection.check_request(probes, executions)


def test_a_train_spec_with_a_probe_is_refused():
    with pytest.raises(SpecError, match="debug: set only by the DebugProbe service"):
        validate(injection.probed_spec(tiny_spec(), "nan_input", "graph"))


def test_without_a_probe_every_hook_returns_what_it_was_given():
    inject = injection.Injection(tiny_spec())
    data = datasets.synthetic(0, 16, 8)
    assert inject.dataset(data) is data
    assert inject.model_spec(tiny_spec().model) == tiny_spec().model
    assert not inject.eager


@pytest.mark.parametrize("probe", ["none", *(p for p in injection.NAMES if p != "channel_order")])
def test_a_run_without_the_layout_probe_trains_on_the_pipelines_own_batch_function(probe):
    # Chosen once at set-up: a measured step then calls nothing of the probes.
    def train_batch(k):
        return np.zeros((2, 32, 32, 3)), np.zeros(2)

    assert inject(probe).batches(train_batch, "NHWC", np.transpose) is train_batch


def inject(probe: str, execution: str = "graph") -> injection.Injection:
    return injection.Injection(injection.probed_spec(tiny_spec(), probe, execution))


def test_label_probes_make_float_labels_and_labels_counted_from_one():
    data = datasets.synthetic(0, 64, 8)
    floats = inject("float_labels").dataset(data)
    assert floats.train_labels.dtype == np.float32
    np.testing.assert_array_equal(floats.train_labels, data.train_labels)
    shifted = inject("labels_out_of_range").dataset(data)
    np.testing.assert_array_equal(shifted.train_labels, data.train_labels + 1)
    assert shifted.train_labels.max() == len(data.classes)


def test_the_nan_pixel_survives_every_crop_of_the_schedule():
    data = inject("nan_input").dataset(datasets.synthetic(0, 64, 8))
    plan = schedule.epoch_plan(0, 0, 64, "crop-flip")
    cropped = schedule.apply_numpy(data.train_images, plan)
    assert np.isnan(cropped).any(axis=(1, 2, 3)).all()
    assert np.isnan(cropped).sum() == 64


def test_the_head_probe_adds_a_class_and_the_layout_probe_transposes_to_the_other_layout():
    # The service has completed the spec from the dataset: 10 classes.
    model = tiny_spec(model__num_classes=10).model
    assert inject("head_classes").model_spec(model).num_classes == 11
    labels = np.arange(2)
    for layout, images, fed in (
        ("NHWC", np.zeros((2, 32, 32, 3)), (2, 3, 32, 32)),
        ("NCHW", np.zeros((2, 3, 32, 32)), (2, 32, 32, 3)),
    ):
        batches = inject("channel_order").batches(
            lambda k, images=images: (images, labels), layout, np.transpose
        )
        x, y = batches(0)
        assert x.shape == fed
        assert y is labels
    assert inject("none", "eager").eager


def test_the_diverging_probe_multiplies_the_learning_rate_and_nothing_else():
    spec = tiny_spec()
    probed = injection.probed_spec(spec, "diverging_lr", "eager")
    assert probed.optimizer.learning_rate == spec.optimizer.learning_rate * 1e6
    assert (probed.debug.probe, probed.debug.execution) == ("diverging_lr", "eager")
    probed.ClearField("debug")
    probed.optimizer.learning_rate = spec.optimizer.learning_rate
    assert probed == spec


def frame(path: Path, name: str, line: str = "") -> traceback.FrameSummary:
    return traceback.FrameSummary(str(path), 1, name, line=line)


def test_a_probed_jobs_traceback_reads_as_the_users_script_with_the_harness_left_out():
    user_dir = injection.SERVICES / "pytorch"
    harness_file = injection.SERVICES / "common" / "harness.py"
    torch_file = Path("/venv/lib/python3.12/site-packages/torch/nn/functional.py")
    frames = [
        frame(Path(injection.__file__), "run", "trainer.train(spec, recorder)"),
        frame(user_dir / "trainer.py", "train", "harness.train(spec, recorder, Training)"),
        frame(harness_file, "train", "run.fit(recorder)"),
        frame(user_dir / "trainer.py", "fit", "harness.run_epochs(...)"),
        frame(harness_file, "run_epochs", "loop.train_steps(first, count)"),
        frame(user_dir / "trainer.py", "train_steps", "self.step(x, y)"),
        frame(user_dir / "trainer.py", "__call__", "loss = F.cross_entropy("),
        frame(torch_file, "cross_entropy"),
    ]
    kept, entry = injection.as_written(frames, user_dir)
    # As the loop written as one function would read: its line, the step's, then PyTorch's.
    assert kept == frames[5:]
    assert entry is frames[5]
    # A job whose error comes out of the entry itself (Keras' fit) has no user line beyond it.
    keras_fit = frame(Path("/venv/lib/python3.12/site-packages/keras/src/trainer.py"), "fit")
    kept, entry = injection.as_written([*frames[:4], keras_fit], user_dir)
    assert kept == [frames[3], keras_fit]
    assert entry is frames[3]


# ---- the CLI's refusals, before any service starts -----------------------------------------------


def test_a_bad_probe_name_is_a_clear_error_before_anything_starts(tmp_path):
    result = fwbench("debug-probe", "--probes", "channel_order,typo", "--out", tmp_path / "d")
    assert result.returncode == 2
    assert "probe typo not known; choose from head_classes" in result.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("flag", ["--executions", "--modes"])  # --modes: the earlier name
def test_a_bad_execution_is_a_clear_error(tmp_path, flag):
    result = fwbench("debug-probe", flag, "graph,jit", "--out", tmp_path / "d")
    assert result.returncode == 2
    assert "execution jit not known; choose from graph, eager" in result.stderr


# ---- every framework, for real ----------------------------------------------------------------


# TensorFlow traces and JAX compiles the job again in each probe's fresh worker (~15 s on 2 cores;
# JAX without jit runs op by op, ~50 s): over a minute for all probes, so PyTorch in `make test`.
@pytest.fixture(scope="module")
def graph_results(stub):
    """graph_results(framework) -> {probe: ProbeResult} of every probe in graph execution."""
    measured = {}

    def get(framework: str) -> dict[str, pb.ProbeResult]:
        if framework not in measured:
            request = pb.DebugProbeRequest(spec=job(), executions=["graph"])
            measured[framework] = {r.probe: r for r in stub(framework).DebugProbe(request)}
        return measured[framework]

    return get


@pytest.mark.framework
@pytest.mark.parametrize("framework", once_in_make_test(FRAMEWORKS, "pytorch"))
def test_each_probe_has_the_outcome_the_framework_really_gives(graph_results, framework):
    results = graph_results(framework)
    assert list(results) == ["none", *injection.NAMES]
    assert {p: r.outcome for p, r in results.items() if p != "none"} == GRAPH_OUTCOMES[framework]
    unbroken = results["none"]
    assert unbroken.outcome == "ok"
    assert unbroken.steps_run == unbroken.steps_planned == 4
    assert unbroken.step_time_median_s > 0
    for result in results.values():
        assert result.framework == framework and result.execution == "graph"
        if result.outcome == "error":
            assert result.exception_type and result.message
            assert result.traceback_frames > 0
            assert 0 <= result.framework_frame_fraction <= 1
        if result.outcome == "silent":
            assert result.steps_run == 4 and not result.message
    # The first non-finite loss is found at its own step: NaN input at the first.
    assert results["nan_input"].steps_run == 0
    assert 0 < results["diverging_lr"].steps_run < 4


@pytest.mark.framework
def test_pytorch_names_the_culprit_at_the_users_own_line(graph_results):
    results = graph_results("pytorch")
    out_of_range = results["labels_out_of_range"]
    assert out_of_range.exception_type == "IndexError"
    assert out_of_range.message == "Target 10 is out of bounds."
    assert out_of_range.message_names_culprit and out_of_range.traceback_has_user_line
    assert out_of_range.user_frame.startswith("services/pytorch/trainer.py:")
    assert "F.cross_entropy(" in out_of_range.user_frame
    channels = results["channel_order"]
    assert "expected input[8, 32, 32, 3] to have 3 channels, but got 32 channels" in (
        channels.message
    )
    assert channels.message_names_culprit


@pytest.mark.framework
@pytest.mark.slow
def test_keras_names_the_shapes_but_its_traceback_stops_at_fit(graph_results):
    results = graph_results("tensorflow")
    head = results["head_classes"]
    assert "target.shape=(None, 10), output.shape=(None, 11)" in head.message
    assert head.message_names_culprit
    # Keras filters its own frames out of the traceback: the user's only line is fit().
    assert not head.traceback_has_user_line
    assert "model.fit(" in head.user_frame
    assert "expected shape=(None, 32, 32, 3), found shape=(None, 3, 32, 32)" in (
        results["channel_order"].message
    )


@pytest.mark.framework
@pytest.mark.slow
def test_jax_trains_on_float_labels_and_only_evaluation_raises(graph_results):
    results = graph_results("jax")
    floats = results["float_labels"]
    assert floats.steps_run == floats.steps_planned == 4
    assert "subdtype of <class 'numpy.integer'>, got float32" in floats.message
    assert "softmax_cross_entropy_with_integer_labels" in floats.user_frame
    channels = results["channel_order"]
    assert "32 // 1 != 3" in channels.message and channels.message_names_culprit
    assert channels.user_frame.startswith("services/jax/models.py:")


@pytest.mark.framework
@pytest.mark.parametrize("framework", once_in_make_test(FRAMEWORKS, "pytorch"))
def test_eager_execution_runs_the_same_job_and_prices_itself(stub, framework):
    request = pb.DebugProbeRequest(spec=job(), probes=["channel_order"], executions=["eager"])
    results = {r.probe: r for r in stub(framework).DebugProbe(request)}
    assert results["none"].outcome == "ok" and results["none"].execution == "eager"
    assert results["none"].step_time_median_s > 0
    assert results["channel_order"].outcome == "error"
    assert (
        results["none"].execution_detail
        == {
            "pytorch": "eager",
            "tensorflow": "keras fit, run_eagerly=True",
            "jax": "jax.disable_jit()",
        }[framework]
    )


@pytest.mark.framework
def test_the_service_refuses_an_unknown_probe_naming_the_known_ones(stub):
    import grpc

    request = pb.DebugProbeRequest(spec=job(), probes=["typo"])
    with pytest.raises(grpc.RpcError) as caught:
        list(stub("pytorch").DebugProbe(request))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "probes: 'typo' not one of head_classes" in caught.value.details()


@pytest.mark.framework
def test_the_cli_writes_each_probe_it_ran_to_the_csv_and_the_report(tmp_path):
    # The command's plumbing (services, debug.csv, the report's section), once, with PyTorch: what
    # each framework's probes give is test_each_probe_has_the_outcome_the_framework_really_gives.
    out = tmp_path / "debug"
    result = fwbench(
        "debug-probe", "--frameworks", "pytorch", "--probes", "labels_out_of_range",
        "--executions", "graph", "--device", "cpu", "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = pd.read_csv(out / "debug.csv")
    assert list(zip(rows.framework, rows.probe, rows.execution, strict=True)) == [
        ("pytorch", "none", "graph"),
        ("pytorch", "labels_out_of_range", "graph"),
    ]
    assert list(rows.outcome) == ["ok", GRAPH_OUTCOMES["pytorch"]["labels_out_of_range"]]
    report = (out / "report.md").read_text()
    assert "## Debug probes" in report
    assert "Target 10 is out of bounds." in report


def test_the_report_section_shows_every_probe_and_framework_and_the_price_of_eager():
    results = [
        pb.ProbeResult(
            framework=f,
            probe=p,
            execution=e,
            outcome="ok" if p == "none" else "error",
            exception_type="IndexError",
            message=f"{f} says {p}",
            step_time_median_s=0.1 if e == "graph" else 0.3,
        )
        for f in FRAMEWORKS
        for e in ("graph", "eager")
        for p in ("none", *injection.NAMES)
    ]
    rows = pd.DataFrame(
        [schema.row(r, schema.PROBE_FIELDS) for r in results], columns=list(schema.DEBUG_COLUMNS)
    )
    section = debugging.section(rows).markdown
    for probe in injection.NAMES:
        assert section.count(f"| {probe} |") == 2
        for framework in FRAMEWORKS:
            assert f"{framework} says {probe}" in section
    assert "PyTorch 3.00×; TensorFlow 3.00×; JAX 3.00×" in section


def test_debug_csv_reads_back_the_outcome_nan_as_a_word_not_a_missing_value(tmp_path):
    # pandas reads the text "nan" as a missing float: the terminal table then crashed and the
    # report lost the outcome of every probe that only fwbench's NaN check caught.
    writer = debug_probe.DebugWriter(tmp_path)
    for framework in FRAMEWORKS:
        writer.add(pb.ProbeResult(framework=framework, probe="none", execution="graph",
                                  outcome="ok", steps_run=4, last_loss=1.83))  # fmt: skip
        writer.add(pb.ProbeResult(framework=framework, probe="nan_input", execution="graph",
                                  outcome="nan", steps_run=1, last_loss=float("nan")))  # fmt: skip
    rows = debugging.read(writer.path)
    assert list(rows.outcome) == ["ok", "nan"] * len(FRAMEWORKS)
    assert rows.steps_run.dtype.kind == "i" and rows.last_loss.dtype.kind == "f"
    assert rows.last_loss.iloc[0] == pytest.approx(1.83) and np.isnan(rows.last_loss.iloc[1])
    assert debugging.table(rows).row_count == 2
    section = debugging.section(rows).markdown
    (row,) = [line for line in section.splitlines() if line.startswith("| nan_input |")]
    assert row.count("NaN found by fwbench") == len(FRAMEWORKS)
