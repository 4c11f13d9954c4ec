"""The GPU path: CUDA training, NVML telemetry, allocator peaks. Needs an NVIDIA GPU (marker `gpu`,
not run by CI); run with `pytest -m gpu` on a GPU host."""

from __future__ import annotations

import os

import pytest

from fwbench.v1 import trainer_pb2 as pb
from services.common import numerics
from tests.conftest import FRAMEWORKS, tiny_spec

# Every test here trains on a GPU through a framework environment.
pytestmark = [pytest.mark.framework, pytest.mark.gpu]
# The frameworks whose GPU path this host can run: all by default. The lent GPU machine has CUDA 13,
# for which TensorFlow has no build: there FWBENCH_GPU_FRAMEWORKS=pytorch,jax says so explicitly.
GPU_FRAMEWORKS = os.environ.get("FWBENCH_GPU_FRAMEWORKS", ",".join(FRAMEWORKS)).split(",")


@pytest.mark.parametrize("framework", GPU_FRAMEWORKS)
def test_describe_sees_the_gpu(stub, framework):
    described = stub(framework).Describe(pb.DescribeRequest(), timeout=120)
    assert any(d.startswith("cuda:0 ") for d in described.devices)
    assert described.cuda_version


@pytest.mark.parametrize("framework", GPU_FRAMEWORKS)
def test_cuda_run_streams_plausible_telemetry_and_memory(stub, framework):
    spec = tiny_spec(
        "resnet50",
        device="cuda",
        precision="fp32",
        epochs=2,
        data__train_limit=8192,
        data__test_limit=1024,
        sample_interval_ms=100,
    )
    events = list(stub(framework).Train(pb.TrainRequest(spec=spec), timeout=600))
    started = events[0].run_started
    end = events[-1].run_end
    samples = [s for e in events if e.HasField("telemetry") for s in e.telemetry.samples]
    epochs = [e.epoch_end for e in events if e.HasField("epoch_end")][1:]  # after the baseline

    assert started.gpu != "none" and started.device_name == started.gpu
    assert started.settings["tf32_matmul"] == "false"  # fp32 means strict fp32
    assert end.energy_method == "counter"
    assert 0 < end.energy_j < 1e6
    assert all(e.energy_j > 0 for e in epochs)
    assert 0 < end.peak_framework_mem_bytes < end.peak_gpu_mem_bytes
    if end.HasField("peak_framework_reserved_bytes"):  # allocators that report a pool (PyTorch)
        assert end.peak_framework_mem_bytes <= end.peak_framework_reserved_bytes
        assert end.peak_framework_reserved_bytes < end.peak_gpu_mem_bytes
    assert 0 < end.mean_gpu_util_pct <= 100
    assert len(samples) >= 10
    assert all(0 < s.power_w < 2000 and s.HasField("gpu_util_pct") for s in samples)
    assert max(s.gpu_util_pct for s in samples) > 10
    # Sampled energy only grows.
    energies = [s.energy_j for s in samples]
    assert energies == sorted(energies)
    assert 0 < end.step_time_median_s <= end.step_time_p90_s
    assert end.first_step_s > 0 and end.time_to_first_step_s > started.import_s


# On a GPU with TF32 (Ampere and newer), as each installed library ships (services/common/
# numerics.py): PyTorch's convolutions only, TensorFlow's and JAX's matmuls and convolutions.
NATIVE_TF32 = {
    "pytorch": {"tf32_matmul": "false", "tf32_conv": "true"},
    "tensorflow": {"tf32_matmul": "true", "tf32_conv": "true"},
    "jax": {"tf32_matmul": "true", "tf32_conv": "true"},
}


@pytest.mark.parametrize("framework", GPU_FRAMEWORKS)
def test_native_keeps_and_records_each_frameworks_own_tf32_switches(stub, framework):
    spec = tiny_spec(device="cuda", precision="native")
    events = list(stub(framework).Train(pb.TrainRequest(spec=spec), timeout=600))
    settings = events[0].run_started.settings
    recorded = {key: settings[key] for key in numerics.TF32_KEYS}
    if all(value.startswith("n/a on compute capability") for value in recorded.values()):
        pytest.skip(f"this GPU has no TF32: {recorded}")
    assert recorded == NATIVE_TF32[framework]
    assert events[-1].run_end.status == "ok"


@pytest.mark.parametrize("model", ["resnet50", "mobilenet_v2"])
def test_tuned_captures_the_whole_step_and_takes_less_time_per_step(stub, model):
    ends = {}
    for mode in ("default", "tuned"):
        spec = tiny_spec(
            model, device="cuda", epochs=1, mode=mode,
            data__train_limit=4000, data__test_limit=512,  # 125 steps: the last one is short
        )  # fmt: skip
        events = list(stub("pytorch").Train(pb.TrainRequest(spec=spec), timeout=600))
        started, ends[mode] = events[0].run_started, events[-1].run_end
        assert started.settings["cuda_graph"] == ("whole step" if mode == "tuned" else "none")
        [_, epoch] = [e.epoch_end for e in events if e.HasField("epoch_end")]
        assert 0 < epoch.train_loss < 5 and epoch.train_accuracy > 0  # every sample trained
    assert ends["tuned"].step_time_median_s < ends["default"].step_time_median_s
