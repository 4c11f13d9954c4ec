"""Where a result came from, from any install: fwbench's commit from git or from the build record
(a copy of the source without .git), the host's kernel and GPUs in context.json, and links in
reports that stay valid when a result set is copied elsewhere. No framework runs."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from orchestrator import report
from orchestrator.report import provenance
from tests.test_compare_frameworks import repeats, result_set

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def source_copy(directory: Path) -> Path:
    """This source as an archive of it holds it: the files git tracks (as they are now), no .git."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        if (ROOT / name).is_file():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, directory / name)
    return directory


def facts_of(copy: Path) -> dict:
    """fwbench_facts() as the copy's own provenance.py reads them (its ROOT is the copy)."""
    spec = importlib.util.spec_from_file_location(
        "copied_provenance", copy / "orchestrator" / "report" / "provenance.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fwbench_facts()


def test_a_copy_without_git_names_the_commit_of_its_build_record(tmp_path):
    copy = source_copy(tmp_path / "fwbench-0.1.0")
    subprocess.run(
        [sys.executable, str(copy / "scripts" / "write-build-record"), "image fwbench/test"],
        env=os.environ | {"FWBENCH_COMMIT": COMMIT},
        check=True,
    )
    facts = facts_of(copy)
    assert facts["git_commit"] == COMMIT
    assert facts["commit_source"].startswith("build record (image fwbench/test, ")
    assert facts["version"] == "0.1.0"
    assert provenance.describe(facts).startswith(f"0.1.0 · {COMMIT[:12]} (build record (image")


def test_a_copy_without_git_or_build_record_says_its_commit_is_unknown(tmp_path):
    facts = facts_of(source_copy(tmp_path / "fwbench-0.1.0"))
    assert facts["git_commit"] is None
    assert facts["version"] == "0.1.0"
    assert provenance.describe(facts) == (
        "0.1.0 · commit unknown (not a git checkout, no build record)"
    )


def test_a_checkout_names_its_commit_from_git():
    facts = provenance.fwbench_facts()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert facts["git_commit"] == head.stdout.strip()
    assert facts["commit_source"] == "git checkout"
    assert facts["git_describe"]


def test_context_records_the_kernel_and_every_gpu_field_or_why_nvml_was_not_read():
    host = provenance.collect()["host"]
    assert host["kernel"] == platform.release()
    if host["nvml"] == "read":
        assert host["gpus"] and all(set(provenance.GPU_FIELDS) <= set(g) for g in host["gpus"])
    else:  # no GPU is made up where NVML cannot be asked
        assert host["nvml"].startswith("absent (") and host["gpus"] == []


def test_the_report_shows_the_kernel_and_each_gpus_clocks_power_ecc_and_mig(tmp_path):
    directory = result_set(tmp_path / "set", repeats("pytorch", 0.010))
    context = json.loads((directory / "context.json").read_text())
    gpu = {
        "index": 0,
        "name": "NVIDIA H200",
        "memory_bytes": 150_754_820_096,
        "sm_clock_max_mhz": 1980,
        "sm_clock_mhz": 1755,
        "memory_clock_max_mhz": 3201,
        "memory_clock_mhz": 3201,
        "power_limit_w": 700.0,
        "ecc_mode": "on",
        "mig_mode": None,
    }
    context["host"] |= {"kernel": "6.8.0-60-generic", "gpus": [gpu], "nvml": "read"}
    (directory / "context.json").write_text(json.dumps(context))
    markdown = report.render(directory).markdown_path.read_text()
    host = markdown.split("### Host")[1]
    assert "- Kernel: 6.8.0-60-generic." in host
    assert (
        "- GPU 0: NVIDIA H200, 140.4 GiB; SM clock 1755 MHz (max 1980 MHz), memory clock 3201 MHz "
        "(max 3201 MHz); power limit 700 W; ECC on; MIG not reported." in host
    )


def test_a_report_outside_the_source_tree_links_nothing_of_the_building_machine(tmp_path):
    directory = result_set(tmp_path / "set", repeats("pytorch", 0.010))
    result = report.render(directory)
    for written in (result.markdown_path, result.html_path):
        page = written.read_text()
        assert str(ROOT) not in page and str(ROOT).lstrip("/") not in page
    assert "docs/results.md in fwbench" in result.markdown_path.read_text()


def test_a_report_inside_the_source_tree_links_its_docs_relatively(tmp_path):
    directory = result_set(tmp_path / "set", repeats("pytorch", 0.010))
    out = ROOT / "results" / f"test-provenance-{os.getpid()}"
    try:
        markdown = report.render(directory, out).markdown_path.read_text()
    finally:
        shutil.rmtree(out)
    assert "[docs/results.md](../../docs/results.md)" in markdown


def test_compare_links_both_sets_relative_to_where_it_is_written(tmp_path):
    a = result_set(tmp_path / "monday", repeats("pytorch", 0.010))
    b = result_set(tmp_path / "tuesday", repeats("jax", 0.005))
    markdown = report.compare(a, b).markdown_path.read_text()
    assert "**A** [monday](../monday)  \n**B** [tuesday](.)" in markdown
    assert str(tmp_path) not in markdown
