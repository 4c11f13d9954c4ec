"""The sampler (services/common/telemetry.py): the no-GPU path on this machine, and the energy
logic against a fake NVML (the library is NVIDIA's, so faking it mocks nothing of ours)."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from services.common.telemetry import Sampler, nvml_index, open_gpu


class FakeNvml:
    """The handful of pynvml calls the sampler makes, with a settable power and energy counter."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    def __init__(self, *, energy_counter: bool, power_w: float = 200.0):
        self.energy_counter = energy_counter
        self.power_w = power_w
        self.energy_mj = 1_000_000  # the counter counts since driver load, not since our start
        self.opened = None

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        self.opened = index
        return "handle"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.opened = uuid
        return "handle"

    def nvmlDeviceGetName(self, handle):
        return b"Fake H100"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.energy_counter:
            raise self.NVMLError("Not Supported")
        return self.energy_mj

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=40, memory=5)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle):
        return int(self.power_w * 1000)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 50

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return 1980

    # No GPM (pre-Hopper): the sampler must simply leave sm_active_pct absent.


class Clock:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def sampler_with(nvml, clock) -> tuple[Sampler, list]:
    batches = []
    sampler = Sampler(
        interval_ms=100, cuda_device_index=0, t_s=clock, emit=batches.append, nvml=nvml
    )
    return sampler, batches


def test_energy_is_the_counter_difference_since_start():
    nvml, clock = FakeNvml(energy_counter=True), Clock()
    sampler, _ = sampler_with(nvml, clock)
    nvml.energy_mj += 2_500  # 2.5 J used
    (sample,) = sampler.sample()
    assert sample.energy_j == pytest.approx(2.5)
    assert not sample.HasField("sm_active_pct")
    assert sampler.energy_method() == "counter"
    assert sampler.energy_j() == pytest.approx(2.5)


def test_without_the_counter_energy_integrates_power_and_says_so():
    nvml, clock = FakeNvml(energy_counter=False, power_w=200.0), Clock()
    sampler, _ = sampler_with(nvml, clock)
    for t_s, power_w in ((0.0, 200.0), (1.0, 200.0), (2.0, 100.0)):
        clock.now_s, nvml.power_w = t_s, power_w
        (sample,) = sampler.sample()
        assert not sample.HasField("energy_j")  # no counter reading: absent, not 0
    summary = sampler.stop()
    # Trapezoids: 1 s at 200 W, then 1 s from 200 to 100 W.
    assert summary.energy_method == "power-integration"
    assert summary.energy_j == pytest.approx(200 + 150)
    assert summary.peak_gpu_mem_bytes == 3 * 2**30
    assert summary.mean_gpu_util_pct == pytest.approx(40)


def test_sampling_thread_sends_batches_and_flushes_at_stop():
    nvml = FakeNvml(energy_counter=True)
    batches: list = []
    sampler = Sampler(
        interval_ms=20, cuda_device_index=0, t_s=lambda: 0.0, emit=batches.append, nvml=nvml
    )
    sampler.start()
    import time

    time.sleep(1.3)
    summary = sampler.stop()
    samples = [s for batch in batches for s in batch]
    assert len(batches) >= 2, "one batch a second, plus the final flush"
    assert len(samples) >= 30
    assert all(s.gpu_util_pct == 40 and s.rss_bytes > 0 for s in samples)
    assert summary.energy_method == "counter"


def test_no_gpu_is_said_explicitly_and_host_metrics_still_flow():
    # This machine has no NVIDIA driver: NVML itself fails to load.
    assert open_gpu(0) is None
    batches: list = []
    sampler = Sampler(interval_ms=100, cuda_device_index=None, t_s=lambda: 1.0, emit=batches.append)
    assert sampler.gpu_name == "none"
    (sample,) = sampler.sample()
    assert sample.rss_bytes > 0
    assert not sample.HasField("gpu_util_pct") and not sample.HasField("power_w")
    summary = sampler.stop()
    assert summary.energy_method == "none"
    assert summary.energy_j is None and summary.peak_gpu_mem_bytes is None


@pytest.mark.parametrize(
    ("visible", "cuda_index", "expected"),
    [(None, 1, 1), ("", 0, 0), ("2,3", 1, 3), ("GPU-abc,GPU-def", 0, "GPU-abc")],
)
def test_cuda_device_maps_to_the_nvml_device(visible, cuda_index, expected, monkeypatch):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert nvml_index(cuda_index) == expected
    nvml = FakeNvml(energy_counter=True)
    assert open_gpu(cuda_index, nvml).name == "Fake H100"
    assert nvml.opened == expected


def test_each_device_of_a_data_parallel_run_has_a_sample_of_its_own_and_their_energy_adds_up():
    nvml, clock, batches = FakeNvml(energy_counter=True), Clock(), []
    # A second device driven by another process, as a PyTorch rank is.
    rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sampler = Sampler(
            interval_ms=100,
            cuda_device_index=0,
            t_s=clock,
            emit=batches.append,
            nvml=nvml,
            pids=[os.getpid(), rank.pid],
        )
        assert nvml.opened == 1, "the second device's NVML handle"
        nvml.energy_mj += 2_500  # 2.5 J on each device (the fake has one counter)
        first, second = sampler.sample()
    finally:
        rank.kill()
        rank.wait()
    assert (first.device_index, second.device_index) == (0, 1)
    assert first.rss_bytes != second.rss_bytes, "each device's own process"
    assert first.energy_j == second.energy_j == pytest.approx(2.5)
    assert sampler.energy_j() == pytest.approx(5.0)
