"""Deployment, measured (fwbench run --deploy): every framework exports every serving format of
its trained model, each artifact reloads and runs in a fresh process, its outputs match the
trained model's, failures are recorded with their message, and deploy.csv and the report carry
the rows."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
from google.protobuf import json_format

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import cli, report
from orchestrator.inputs import options, suite_file
from orchestrator.report import deployment
from orchestrator.results import journal, schema
from orchestrator.results.journal import RunOutcome
from services.common import spec as specs
from tests.conftest import FRAMEWORKS, ROOT, fwbench, once_in_make_test, tiny_spec, venv_python

# Each framework's serving formats, in the order its service reports them.
FORMATS = {
    "pytorch": ["torch.export", "onnx"],
    "tensorflow": ["savedmodel", "tflite"],
    "jax": ["jax.export"],
}
# The formats whose runtime is the framework itself: a fresh process must import it again.
FRAMEWORK_RUNTIMES = ("torch.export", "savedmodel", "jax.export")
# fp32 on the CPU: every runtime's outputs were within 1e-6 of the trained model's; this bound
# leaves room for other kernels, and is far below what a wrong artifact gives.
CPU_TOLERANCE = 1e-4


def deploy_spec(**overrides) -> pb.TrainSpec:
    return tiny_spec(
        "mobilenet",
        deploy__deploy_enabled=True,
        deploy__deploy_warmup_iterations=1,
        deploy__deploy_timed_iterations=3,
        **overrides,
    )


def test_every_framework_has_its_serving_formats_listed_here():
    assert set(FORMATS) == set(FRAMEWORKS)


# PyTorch's formats are proven in `make test` by the CLI's run below, JAX's here; TensorFlow's two
# (SavedModel, TFLite: 35 s on 2 cores) in `make test-slow`.
@pytest.mark.framework
@pytest.mark.parametrize("framework", once_in_make_test(FRAMEWORKS, "jax"))
def test_every_format_exports_reloads_in_a_fresh_process_and_matches_the_trained_model(
    stub, framework
):
    events = list(stub(framework).Train(pb.TrainRequest(spec=deploy_spec()), timeout=900))
    kinds = [e.WhichOneof("event") for e in events]
    # Deployment comes after RunEnd, so it never counts in the training's times.
    assert kinds[-2:] == ["run_end", "deployment"]
    found = events[-1].deployment.results
    assert [r.format for r in found] == FORMATS[framework]
    for result in found:
        assert result.status == "ok", f"{result.format}: {result.error}"
        assert result.error == ""
        assert result.device == "cpu" and result.runtime
        assert result.max_abs_diff <= CPU_TOLERANCE
        assert result.max_abs_diff <= result.tolerance
        assert result.export_s > 0 and result.size_bytes > 1_000_000  # 2.2 M float32 weights
        assert result.load_s > 0 and result.first_inference_s > 0
        assert 0 < result.batch1_p50_ms <= result.batch1_p99_ms
        assert 0 < result.batch32_p50_ms <= result.batch32_p99_ms
        assert (result.warmup_iterations, result.timed_iterations) == (1, 3)
        if result.format in FRAMEWORK_RUNTIMES:
            # The training worker has the framework imported: only a fresh process pays this.
            assert result.import_s > 0.2


@pytest.mark.framework
def test_a_run_without_deploy_exports_nothing(trained_once):
    # The tiny run that test_gpus trains on one device, once per session (conftest).
    events = trained_once("pytorch", tiny_spec("mobilenet_v2"))
    assert events[-1].WhichOneof("event") == "run_end"
    assert not any(e.HasField("deployment") for e in events)


@pytest.mark.framework
def test_a_failing_export_is_recorded_failed_with_its_message_and_a_wrong_artifact_never_ok(
    tmp_path,
):
    out = tmp_path / "deployment.json"
    done = subprocess.run(
        [venv_python("pytorch"), "-m", "tests.deploy_failure", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results_ = json_format.Parse(out.read_text(), pb.TrainEvent()).deployment.results
    *unexportable, wrong = results_
    assert [r.format for r in unexportable] == ["torch.export", "onnx"]
    for result in unexportable:
        assert result.status == "failed"
        # The step, then torch's own words about the data-dependent branch.
        assert result.error.startswith("export: ")
        assert "data-dependent" in result.error
        assert "\x1b[" not in result.error  # the ONNX exporter's colours are gone
        # Nothing after the failed step is measured, and nothing is reported as 0.
        for field in ("export_s", "size_bytes", "load_s", "batch1_p50_ms", "max_abs_diff"):
            assert not result.HasField(field)
    assert wrong.status == "mismatch"
    assert wrong.max_abs_diff > wrong.tolerance
    assert "exceeds the tolerance" in wrong.error


@pytest.mark.framework
def test_fwbench_run_deploy_writes_deploy_csv_and_the_report_section(tmp_path: Path):
    out = tmp_path / "run"
    done = fwbench(
        "run", "--frameworks", "pytorch", "--models", "mobilenet",
        "--dataset", "synthetic", "--train-limit", "64", "--test-limit", "32", "--epochs", "1",
        "--device", "cpu", "--deploy", "--deploy-warmup", "1", "--deploy-iterations", "3",
        "--out", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deploy torch.export ok" in done.stdout and "deploy onnx ok" in done.stdout
    table = pd.read_csv(out / "deploy.csv")
    assert list(table["format"]) == FORMATS["pytorch"]
    assert set(table["status"]) == {"ok"}
    assert list(table.columns) == list(schema.DEPLOY_COLUMNS)
    runs = pd.read_csv(out / "runs.csv")
    assert runs.loc[0, "deploy_enabled"] and runs.loc[0, "deploy_timed_iterations"] == 3
    markdown = (out / "report.md").read_text()
    section = markdown.split("## Deployment", 1)[1].split("\n## ", 1)[0]
    assert "| pytorch     | torch.export |" in section and "| pytorch     | onnx " in section
    assert "1 warm-up, 3 timed" in section

    # The journal alone rebuilds deploy.csv.
    copy = tmp_path / "copy"
    rebuilt = fwbench("report", out, "--out", copy)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    pd.testing.assert_frame_equal(pd.read_csv(copy / "deploy.csv"), table)
    assert "## Deployment" in (copy / "report.md").read_text()


@pytest.mark.framework
@pytest.mark.gpu
def test_pytorch_deploys_on_cuda_and_both_formats_match(stub):
    spec = deploy_spec(device="cuda", data__train_limit=512, data__test_limit=128)
    events = list(stub("pytorch").Train(pb.TrainRequest(spec=spec), timeout=900))
    found = {r.format: r for r in events[-1].deployment.results}
    assert list(found) == FORMATS["pytorch"]
    assert found["torch.export"].device == "cuda:0"
    for result in found.values():
        assert result.status == "ok", f"{result.format}: {result.error}"
        # GPU and CPU kernels differ in their sums' order; still far below a wrong artifact.
        assert result.max_abs_diff <= 1e-3
        assert 0 < result.batch1_p50_ms <= result.batch1_p99_ms
    # ONNX Runtime's CPU build serves where it can, and says so.
    onnx = found["onnx"]
    assert (onnx.device == "cpu") == ("CPUExecutionProvider" in onnx.runtime)


# ---- no framework: the options, the results and the report ---------------------------------------


def result(form: str, status: str = "ok", **fields) -> pb.DeployResult:
    measured = dict(
        runtime=f"{form} runtime", device="cpu", export_s=1.5, size_bytes=9_000_000,
        import_s=0.5, load_s=0.25, first_inference_s=0.01, batch1_p50_ms=1.0,
        batch1_p99_ms=2.0, batch32_p50_ms=10.0, batch32_p99_ms=12.0, max_abs_diff=1e-7,
    )  # fmt: skip
    if status == "failed":
        measured = {}
    return pb.DeployResult(
        format=form, status=status, tolerance=1e-3, warmup_iterations=2, timed_iterations=5,
        **(measured | fields),
    )  # fmt: skip


def written(tmp_path: Path, deployments: dict[str, list[pb.DeployResult]]) -> Path:
    """A result set whose runs sent these Deployments, written as the runner writes them."""
    writer = journal.ResultsWriter(tmp_path)
    for repeat, (framework, found) in enumerate(deployments.items()):
        run = {"run_id": f"m-{framework}", "framework": framework, "model": "m", "repeat": repeat}
        spec = pb.TrainSpec(model=pb.ModelSpec(name="m"))
        writer.run_begins(run, spec)
        writer.event(run, pb.TrainEvent(deployment=pb.Deployment(results=found)))
        writer.run_finished(run, spec, RunOutcome(end=pb.RunEnd(status="ok")))
    writer.close()
    return tmp_path


def test_deploy_csv_has_one_row_per_format_with_absent_numbers_left_empty(tmp_path):
    out = written(
        tmp_path,
        {
            "pytorch": [result("torch.export"), result("onnx")],
            "tensorflow": [result("savedmodel", "failed", error="export: ValueError: no")],
        },
    )
    table = pd.read_csv(out / "deploy.csv")
    assert list(table["format"]) == ["torch.export", "onnx", "savedmodel"]
    assert list(table["framework"]) == ["pytorch", "pytorch", "tensorflow"]
    failed = table.iloc[2]
    assert failed["status"] == "failed" and failed["error"] == "export: ValueError: no"
    # Never a false 0: what was not measured is empty.
    assert pd.isna(failed["load_s"]) and pd.isna(failed["max_abs_diff"])
    assert table.loc[0, "size_bytes"] == 9_000_000

    replayed = tmp_path / "replayed"
    replayed.mkdir()
    journal.rebuild(journal.read_journal(out / schema.EVENTS_JSONL), replayed)
    pd.testing.assert_frame_equal(pd.read_csv(replayed / "deploy.csv"), table)


def test_the_report_section_tabulates_framework_by_format_and_lists_failures(tmp_path):
    out = written(
        tmp_path,
        {
            "pytorch": [result("torch.export", load_s=3.76), result("onnx")],
            "tensorflow": [result("savedmodel", "failed", error="export: ValueError: no\nmore")],
        },
    )
    section = deployment.section(pd.read_csv(out / "deploy.csv"))
    assert section.title == "Deployment"
    lines = section.markdown.splitlines()
    header = next(line for line in lines if line.startswith("| framework"))
    for heading in ("export s", "size MB", "load s", "p50 ms @1", "p99 ms @32", "max abs Δ"):
        assert heading in header
    row = next(line for line in lines if "| torch.export" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["pytorch", "torch.export", "torch.export runtime", "cpu"]
    assert cells[4:9] == ["1.5", "9.0", "0.5", "3.76", "0.01"]
    assert cells[-2:] == ["1.0e-07", "ok 1/1"]
    failed_row = next(line for line in lines if "| savedmodel" in line)
    assert "—" in failed_row and "ok 0/1 (failed)" in failed_row
    assert "- m-tensorflow savedmodel: failed: export: ValueError: no" in lines
    assert "2 warm-up, 5 timed" in section.markdown

    report_md = report.render(out).markdown_path.read_text()
    assert "## Deployment" in report_md and "| onnx " in report_md


def test_a_format_without_status_or_message_is_reported_unrecorded_not_crashing(tmp_path):
    # A service other than ours may leave status and error empty: the section still renders and
    # never counts such a format as ok.
    out = written(
        tmp_path,
        {"pytorch": [result("torch.export"), result("onnx", status="", error="")]},
    )
    section = deployment.section(pd.read_csv(out / "deploy.csv"))
    onnx_row = next(line for line in section.markdown.splitlines() if "| onnx" in line)
    assert "ok 0/1 (no status recorded)" in onnx_row
    assert "- m-pytorch onnx: no status recorded: no message" in section.markdown


def test_deploy_options_and_the_suite_key_set_the_spec(tmp_path):
    args = cli.parser().parse_args(
        ["run", "--out", str(tmp_path), "--deploy", "--deploy-iterations", "7"]
    )
    spec = options.build_spec(args)
    assert spec.deploy.deploy_enabled and spec.deploy.deploy_timed_iterations == 7
    assert (
        spec.deploy.deploy_warmup_iterations == specs.DEFAULTS["deploy"]["deploy_warmup_iterations"]
    )
    assert not options.build_spec(
        cli.parser().parse_args(["run", "--out", "x"])
    ).deploy.deploy_enabled

    path = tmp_path / "suite.yaml"
    path.write_text("name: d\nframeworks: [pytorch]\nmodels: [mobilenet]\nspec:\n  deploy: true\n")
    assert suite_file.load(path).spec == {"deploy": True}
    path.write_text("name: d\nframeworks: [pytorch]\nmodels: [mobilenet]\nspec:\n  deploy: 3\n")
    with pytest.raises(suite_file.SuiteError, match=r"spec\.deploy: expected true or false"):
        suite_file.load(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("deploy_timed_iterations", 0), ("deploy_timed_iterations", 10_001),
     ("deploy_warmup_iterations", 1001)],
)  # fmt: skip
def test_deploy_iterations_out_of_range_are_refused_naming_the_field(field, value):
    spec = tiny_spec(**{f"deploy__{field}": value})
    with pytest.raises(specs.SpecError, match=rf"deploy\.{field}: must be in"):
        specs.validate(spec)


def test_deploy_csv_columns_come_from_the_proto():
    # A field added to DeployResult is a deploy.csv column without an edit in the schema.
    assert list(schema.DEPLOY_FIELDS) == [f.name for f in pb.DeployResult.DESCRIPTOR.fields]
