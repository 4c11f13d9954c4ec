"""Device and host sampling during a run: NVML (nvidia-ml-py) for the GPU, psutil for the host.

Everything is device-level for the GPU the run uses: inside containers NVML sees host PIDs, so
per-process GPU numbers are unreliable; the framework's own allocator peak complements these.

Energy is the difference of nvmlDeviceGetTotalEnergyConsumption (mJ) since the sampler started;
where the counter is unsupported, the integral of sampled power; where neither can be read there is
no GPU energy, reported as method "none" and an absent value, never a silent 0.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable

import psutil

from fwbench.v1 import trainer_pb2 as pb

BATCH_INTERVAL_S = 1.0


@dataclasses.dataclass
class Summary:
    peak_gpu_mem_bytes: int | None
    mean_gpu_util_pct: float | None
    energy_j: float | None
    energy_method: str  # counter | power-integration | none


def nvml_index(cuda_device_index: int, visible: str | None = None) -> int | str:
    """The NVML index (or UUID) of CUDA device `cuda_device_index` given CUDA_VISIBLE_DEVICES.

    NVML numbers devices by PCI bus id; CUDA does too once CUDA_DEVICE_ORDER=PCI_BUS_ID, which the
    services set before any CUDA initialisation.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if not visible:
        return cuda_device_index
    entry = visible.split(",")[cuda_device_index].strip()
    return int(entry) if entry.isdigit() else entry


def visible_gpu_uuids(nvml=None) -> list[str]:
    """NVML UUIDs of the GPUs this process may use (CUDA_VISIBLE_DEVICES, else every GPU); [] when
    NVML is unavailable (no driver)."""
    if nvml is None:
        import pynvml as nvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return []
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        count = nvml.nvmlDeviceGetCount()
        entries = [e.strip() for e in visible.split(",") if e.strip()] if visible else range(count)
        uuids = []
        for entry in entries:
            entry = str(entry)
            handle = (
                nvml.nvmlDeviceGetHandleByIndex(int(entry))
                if entry.isdigit()
                else nvml.nvmlDeviceGetHandleByUUID(entry)
            )
            uuid = nvml.nvmlDeviceGetUUID(handle)
            uuids.append(uuid.decode() if isinstance(uuid, bytes) else uuid)
        return uuids
    except nvml.NVMLError:
        return []
    finally:
        nvml.nvmlShutdown()


class _Gpu:
    """The NVML handle of one device and the readings fwbench takes from it."""

    def __init__(self, nvml, index: int | str):
        self.nvml = nvml
        nvml.nvmlInit()
        self.handle = (
            nvml.nvmlDeviceGetHandleByIndex(index)
            if isinstance(index, int)
            else nvml.nvmlDeviceGetHandleByUUID(index)
        )
        name = nvml.nvmlDeviceGetName(self.handle)
        self.name = name.decode() if isinstance(name, bytes) else name
        self.energy_start_mj = self._read(nvml.nvmlDeviceGetTotalEnergyConsumption)
        self.gpm = self._gpm_setup()

    def _read(self, fn, *args):
        try:
            return fn(self.handle, *args)
        except self.nvml.NVMLError:
            return None

    def _gpm_setup(self):
        # SM activity needs GPM (Hopper and newer); older GPUs and drivers simply lack it.
        try:
            if not self.nvml.nvmlGpmQueryDeviceSupport(self.handle).isSupportedDevice:
                return None
            sample = self.nvml.nvmlGpmSampleAlloc()
            self.nvml.nvmlGpmSampleGet(self.handle, sample)
            return sample
        except (AttributeError, self.nvml.NVMLError):
            return None

    def sm_active_pct(self) -> float | None:
        if self.gpm is None:
            return None
        nvml = self.nvml
        try:
            current = nvml.nvmlGpmSampleAlloc()
            nvml.nvmlGpmSampleGet(self.handle, current)
            metrics = nvml.c_nvmlGpmMetricsGet_t()
            metrics.version = nvml.NVML_GPM_METRICS_GET_VERSION
            metrics.numMetrics = 1
            metrics.sample1, metrics.sample2 = self.gpm, current
            metrics.metrics[0].metricId = nvml.NVML_GPM_METRIC_SM_UTIL
            nvml.nvmlGpmMetricsGet(metrics)
            nvml.nvmlGpmSampleFree(self.gpm)
            self.gpm = current
            return float(metrics.metrics[0].value)
        except nvml.NVMLError:
            return None

    def sample(self, into: pb.TelemetrySample) -> None:
        nvml = self.nvml
        util = self._read(nvml.nvmlDeviceGetUtilizationRates)
        if util is not None:
            into.gpu_util_pct, into.mem_util_pct = util.gpu, util.memory
        memory = self._read(nvml.nvmlDeviceGetMemoryInfo)
        if memory is not None:
            into.mem_used_bytes, into.mem_total_bytes = memory.used, memory.total
        power_mw = self._read(nvml.nvmlDeviceGetPowerUsage)
        if power_mw is not None:
            into.power_w = power_mw / 1000
        temp = self._read(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
        if temp is not None:
            into.temp_c = temp
        clock = self._read(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM)
        if clock is not None:
            into.sm_clock_mhz = clock
        if self.energy_start_mj is not None:
            energy_mj = self._read(nvml.nvmlDeviceGetTotalEnergyConsumption)
            if energy_mj is not None:
                into.energy_j = (energy_mj - self.energy_start_mj) / 1000
        sm_active = self.sm_active_pct()
        if sm_active is not None:
            into.sm_active_pct = sm_active


def open_gpu(cuda_device_index: int | None, nvml=None) -> _Gpu | None:
    """NVML for the run's CUDA device, or None when the run has no GPU or NVML is unavailable
    (no driver: NVMLError_LibraryNotFound)."""
    if cuda_device_index is None:
        return None
    if nvml is None:
        import pynvml as nvml
    try:
        return _Gpu(nvml, nvml_index(cuda_device_index))
    except nvml.NVMLError:
        return None


class Sampler:
    """Samples every `interval_ms` on a background thread and hands batches of samples to `emit`
    about once a second; stop() flushes the rest and summarises the run.

    A run over several devices (data parallel) has a sample per device each time: CUDA devices
    cuda_device_index, cuda_device_index + 1, ... and the process that drives each (`pids`, one
    per device; by default this one for all). The run's summary is the devices' together: the
    largest memory of any, the mean utilisation of all, their energies added."""

    def __init__(
        self,
        *,
        interval_ms: int,
        cuda_device_index: int | None,
        t_s: Callable[[], float],
        emit: Callable[[list[pb.TelemetrySample]], None],
        nvml=None,
        pids: list[int] | None = None,
    ):
        self._interval_s = interval_ms / 1000
        self._t_s = t_s
        self._emit = emit
        pids = pids or [os.getpid()]
        gpus = (
            [open_gpu(cuda_device_index + d, nvml) for d in range(len(pids))]
            if interval_ms and cuda_device_index is not None
            else []
        )
        self._gpus = [g for g in gpus if g is not None]
        self._gpu = self._gpus[0] if self._gpus else None
        self.gpu_name = self._gpu.name if self._gpu else "none"
        # One psutil.Process per distinct process: its cpu_percent counts since its last call.
        processes = {pid: psutil.Process(pid) for pid in dict.fromkeys(pids)}
        self._device_processes = [processes[pid] for pid in pids]
        self._pending: list[pb.TelemetrySample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fwbench-sampler", daemon=True)
        self._lock = threading.Lock()
        # Run-level aggregates, kept as samples arrive so that batches can be dropped once sent.
        self._peak_mem_bytes: int | None = None
        self._util_sum, self._util_count = 0.0, 0
        # Per device index: the last energy reading, the power integral, the last power reading.
        self._last_energy_j: dict[int, float] = {}
        self._power_integral_j: dict[int, float] = {}
        self._last_power: dict[int, tuple[float, float]] = {}  # (t_s, power_w)

    def start(self) -> None:
        if self._interval_s:
            for process in set(self._device_processes):
                process.cpu_percent(None)  # the first call only sets psutil's reference point
            self._thread.start()

    def _loop(self) -> None:
        last_emit = time.monotonic()
        while not self._stop.wait(self._interval_s):
            self.sample()
            if time.monotonic() - last_emit >= BATCH_INTERVAL_S:
                self._flush()
                last_emit = time.monotonic()

    def sample(self) -> list[pb.TelemetrySample]:
        """One sample of each device, now."""
        t_s = self._t_s()
        host = {}
        for process in self._device_processes:
            if process not in host:
                try:
                    host[process] = (process.memory_info().rss, process.cpu_percent(None))
                except psutil.NoSuchProcess:  # a rank that has ended
                    host[process] = (0, 0.0)
        samples = []
        for device, process in enumerate(self._device_processes):
            rss_bytes, cpu_pct = host[process]
            s = pb.TelemetrySample(
                t_s=t_s, rss_bytes=rss_bytes, cpu_pct=cpu_pct, device_index=device
            )
            if device < len(self._gpus):
                self._gpus[device].sample(s)
            samples.append(s)
        with self._lock:
            for s in samples:
                self._account(s)
            self._pending.extend(samples)
        return samples

    def _account(self, s: pb.TelemetrySample) -> None:
        if s.HasField("mem_used_bytes"):
            self._peak_mem_bytes = max(self._peak_mem_bytes or 0, s.mem_used_bytes)
        if s.HasField("gpu_util_pct"):
            self._util_sum += s.gpu_util_pct
            self._util_count += 1
        device = s.device_index
        if s.HasField("energy_j"):
            self._last_energy_j[device] = s.energy_j
        if s.HasField("power_w"):
            if device in self._last_power:
                t0, p0 = self._last_power[device]
                self._power_integral_j[device] = (
                    self._power_integral_j.get(device, 0.0) + (s.t_s - t0) * (p0 + s.power_w) / 2
                )
            self._last_power[device] = (s.t_s, s.power_w)

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self._emit(batch)

    def energy_method(self) -> str:
        if self._gpu is None:
            return "none"
        if self._gpu.energy_start_mj is not None:
            return "counter"
        return "power-integration" if self._last_power else "none"

    def energy_j(self) -> float | None:
        """GPU energy since start by the best available method, every device's added; None
        without a GPU."""
        with self._lock:
            method = self.energy_method()
            if method == "counter":
                return sum(self._last_energy_j.values())
            if method == "power-integration":
                return sum(self._power_integral_j.values())
            return None

    def stop(self) -> Summary:
        if self._interval_s:
            self._stop.set()
            if self._thread.ident is not None:
                self._thread.join()
            self.sample()  # a final reading closes the energy window at the run's end
            self._flush()
        return Summary(
            peak_gpu_mem_bytes=self._peak_mem_bytes,
            mean_gpu_util_pct=self._util_sum / self._util_count if self._util_count else None,
            energy_j=self.energy_j(),
            energy_method=self.energy_method(),
        )
