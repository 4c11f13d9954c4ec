"""PyTorch trainer: the canonical training loop, the way PyTorch users write it.

The dataset lives on the device as uint8 tensors (GPU-resident on CUDA), and each batch is cut,
augmented and normalised there from the shared batch schedule, so no host-side data loader sits
in the measured loop. Training reads top to bottom: set up, load, build, then each epoch's steps,
progress reports and evaluation, as services/common/harness.py runs them for every framework.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from fwbench.v1 import trainer_pb2 as pb
from services.common import datasets, deploy, harness, injection, model_report, numerics, schedule
from services.common.spec import WEIGHT_DECAY, SpecError
from services.pytorch import distributed, models, serving

FRAMEWORK = "pytorch"


def describe() -> pb.DescribeResponse:
    gpus = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    return pb.DescribeResponse(
        framework=FRAMEWORK,
        framework_version=torch.__version__,
        python_version=platform.python_version(),
        cuda_version=torch.version.cuda or "",
        cudnn_version=str(torch.backends.cudnn.version() or ""),
        devices=["cpu", *gpus],
        # The distribution's version: importing torchvision costs a run's start-up 1.2-1.5 s
        # (services/pytorch/models.py torchvision_models).
        library_versions={"torchvision": metadata.version("torchvision"), "numpy": np.__version__},
        hostname=platform.node(),
    )


def resolve_device(name: str, rank: int = 0) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SpecError(
            "device: 'cuda' was requested but PyTorch sees no CUDA device "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "use device 'cpu' or 'auto'"
        )
    if rank >= torch.cuda.device_count():
        raise SpecError(
            f"gpus: rank {rank} needs CUDA device {rank}, but PyTorch sees "
            f"{torch.cuda.device_count()}; use gpus {torch.cuda.device_count()} or fewer"
        )
    return torch.device("cuda", rank)


def configure(spec: pb.TrainSpec, device: torch.device) -> dict[str, str]:
    """Applies the spec's speed/precision knobs and returns them as resolved, for the results."""
    torch.manual_seed(spec.seed)
    # friction: PyTorch's defaults differ between convs (TF32 on) and matmuls (off): native leaves
    # them so, every other precision sets both.
    tf32 = numerics.tf32_switches(spec.precision)
    if tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    # Tuned: cuDNN picks each convolution's fastest algorithm once (shapes never change).
    torch.backends.cudnn.benchmark = spec.cudnn_benchmark or spec.mode == "tuned"
    return {
        "device": str(device),
        "precision": spec.precision,
        # As PyTorch now holds them (native: as it ships).
        **numerics.tf32_settings(
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.cuda.get_device_capability(device) if device.type == "cuda" else None,
        ),
        "cudnn_benchmark": str(torch.backends.cudnn.benchmark).lower(),
        "compile": "torch.compile" if spec.compile else "eager",
        "mode": spec.mode,
        "cuda_graph": "whole step" if graphed(spec, device) else "none",
        "memory_format": "channels_last" if graphed(spec, device) else "contiguous",
        "weight_decay": WEIGHT_DECAY[spec.optimizer.name],
        "threads": str(torch.get_num_threads()),
    }


class Pipeline:
    """The dataset on `device` and the batches of the shared schedule, cut there."""

    def __init__(
        self,
        dataset: datasets.Dataset,
        device: torch.device,
        batch_size: int,
        memory_format: torch.memory_format = torch.contiguous_format,
        devices: int = 1,
        rank: int = 0,
    ):
        self.device = device
        self.batch_size = batch_size
        self.memory_format = memory_format
        # In data parallel, this rank's share of every training batch (evaluation is rank 0's,
        # on the whole test split).
        self.devices, self.rank = devices, rank
        self.train_samples = len(dataset.train_labels)
        pad = schedule.PAD
        train = torch.from_numpy(np.asarray(dataset.train_images)).to(device)
        # Padded once, so that every crop is a pure gather.
        self.train_padded = F.pad(train, (0, 0, pad, pad, pad, pad))
        self.train_labels = torch.from_numpy(np.asarray(dataset.train_labels)).to(device)
        self.test_images = torch.from_numpy(np.asarray(dataset.test_images)).to(device)
        self.test_labels = torch.from_numpy(np.asarray(dataset.test_labels)).to(device)
        self.mean = torch.tensor(dataset.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(dataset.std, device=device).view(1, 3, 1, 1)
        self.arange = torch.arange(schedule.SIZE, device=device)

    def set_epoch(self, plan: schedule.EpochPlan) -> None:
        # One upload per epoch rather than four small copies per step.
        self.plan = [
            torch.from_numpy(a).to(self.device)
            for a in (plan.order, plan.dy, plan.dx, plan.flip.astype(np.int64))
        ]

    def rows(self, k: int) -> slice:
        """Batch k's positions in the epoch's order that this rank trains on."""
        return schedule.device_rows(k, self.batch_size, self.train_samples, self.devices, self.rank)

    def augmented(self, k: int) -> torch.Tensor:
        """Batch k of the epoch (this rank's share) as uint8 NHWC, after crop and flip."""
        order, dy, dx, flip = (a[self.rows(k)] for a in self.plan)
        rows, cols = schedule.crop_indices(dy, dx, flip, self.arange)
        images = self.train_padded[order]
        batch = torch.arange(len(order), device=self.device)[:, None, None]
        return images[batch, rows[:, :, None], cols[:, None, :]]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(255)
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def train_batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = self.plan[0][self.rows(k)]
        return self.normalise(self.augmented(k)), self.train_labels[order]

    def test_batches(self):
        for start in range(0, len(self.test_labels), self.batch_size):
            end = start + self.batch_size
            yield self.normalise(self.test_images[start:end]), self.test_labels[start:end]


def make_optimizer(
    spec: pb.TrainSpec, model: torch.nn.Module, total_steps: int, capturable: bool = False
):
    """The spec's optimizer and per-step schedule. capturable: for a step captured in a CUDA
    graph, the learning rate is a device tensor that the schedule updates in place, and the fused
    CUDA implementations (which take it without reading it back to the host) do the update."""
    o = spec.optimizer
    params = model.parameters()
    # friction: the default (foreach) SGD reads a tensor learning rate back to the host, which a
    # CUDA graph capture forbids; the fused implementations take it on the device.
    lr = torch.tensor(o.learning_rate, device="cuda") if capturable else o.learning_rate
    fused = {"fused": True} if capturable else {}
    if o.name == "sgd":
        optimizer = torch.optim.SGD(
            params,
            lr=lr,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
            **fused,
        )
    elif o.name == "adam":
        optimizer = torch.optim.Adam(
            params, lr=lr, weight_decay=o.weight_decay, capturable=capturable, **fused
        )
    else:
        optimizer = torch.optim.AdamW(
            params, lr=lr, weight_decay=o.weight_decay, capturable=capturable, **fused
        )
    if o.lr_schedule == "cosine":
        schedule_fn = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    else:
        schedule_fn = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return optimizer, schedule_fn


def autocast(spec: pb.TrainSpec, device: torch.device):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.precision)
    # Autocast's weight cast cache must not outlive a CUDA graph's capture.
    return torch.autocast(
        device.type,
        dtype=dtype,
        enabled=dtype is not None,
        cache_enabled=not graphed(spec, device),
    )


def graphed(spec: pb.TrainSpec, device: torch.device) -> bool:
    """Whether the training step is captured in a CUDA graph: the tuned mode on a GPU (there is
    no CUDA graph on the CPU, where tuned trains as default does)."""
    return spec.mode == "tuned" and device.type == "cuda"


class CapturedStep:
    """The whole training step (forward, loss, backward, optimizer, the epoch's sums) captured
    once in a CUDA graph and replayed: one launch per step instead of hundreds, which at batch 32
    is most of an eager step's time (the GPU waits for the host).

    The first WARMUP_STEPS steps run eagerly on a side stream, as CUDA graph capture requires
    (cuDNN autotune, lazy allocations, optimizer state); they are real steps of epoch 0. Then the
    step is captured on static input buffers, and every later full-size batch is copied into them
    and replayed. A short last batch runs eagerly: the graph is for one shape, and no sample is
    dropped or padded.
    """

    WARMUP_STEPS = 3

    def __init__(self, step, batch_size: int, sample_x: torch.Tensor, sample_y: torch.Tensor):
        self._step = step
        self._batch_size = batch_size
        self._static_x = torch.empty_like(sample_x)
        self._static_y = torch.empty_like(sample_y)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._warm_steps = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(y) != self._batch_size:
            self._step(x, y)
            return
        if self._graph is None and self._warm_steps < self.WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._step(x, y)
            torch.cuda.current_stream().wait_stream(side)
            self._warm_steps += 1
            return
        self._static_x.copy_(x)
        self._static_y.copy_(y)
        if self._graph is None:
            # friction: backward must allocate the gradients inside the graph's memory pool.
            self._step.optimizer.zero_grad(set_to_none=True)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._step(self._static_x, self._static_y)
        self._graph.replay()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainStep:
    """One training step of the canonical loop: forward, loss, backward, optimizer step. The
    epoch's sums stay on the device (reading them every step would synchronise every step) and
    are updated in place, so that a CUDA graph of the step updates them too."""

    def __init__(self, spec: pb.TrainSpec, forward, optimizer, device: torch.device):
        self.spec = spec
        self.forward = forward
        self.optimizer = optimizer
        self.device = device
        # Loss scaling is needed for fp16 only; with it disabled the scaler is a no-op.
        self.scaler = torch.amp.GradScaler(device.type, enabled=spec.precision == "fp16")
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.window_loss = torch.zeros((), device=device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(self.spec, self.device):
            logits = self.forward(x)
            loss = F.cross_entropy(
                logits.float(), y, label_smoothing=self.spec.optimizer.label_smoothing
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

        loss = loss.detach()
        self.loss_sum += loss * len(y)
        self.correct += (logits.argmax(1) == y).sum()
        self.window_loss += loss


class Training(harness.Loop):
    """One training run of the canonical loop, in the order services/common/harness.py calls it:
    set up, load, build, then every epoch through the loop's hooks below."""

    def __init__(self, spec: pb.TrainSpec, inject: injection.Injection, rank: int = 0):
        self.spec = spec
        self.inject = inject
        # Data parallel (spec.gpus > 1): this process trains device `rank`'s share
        # (services/pytorch/distributed.py); rank 0 is the worker, which reports.
        self.rank = rank
        self.device = resolve_device(spec.device, rank)
        self.graphed = graphed(spec, self.device)
        if self.graphed and (spec.compile or spec.precision == "fp16"):
            raise SpecError(
                "mode: 'tuned' captures the whole step in a CUDA graph itself, which neither "
                "torch.compile (compile) nor fp16's dynamic loss scaling (precision) can join; "
                "drop compile, or use precision bf16 or fp32"
            )
        if self.graphed and spec.gpus > 1:
            raise SpecError(
                "gpus: mode 'tuned' captures the whole step in one CUDA graph, which "
                "DistributedDataParallel's gradient all-reduce does not join here; use mode "
                "'default' with gpus > 1, or gpus 1"
            )
        self.ranks: distributed.Ranks | None = None
        if spec.gpus > 1:
            if self.device.type == "cpu":
                # The ranks share the host's cores: each takes its part rather than all of them.
                torch.set_num_threads(max(1, torch.get_num_threads() // spec.gpus))
            else:
                torch.cuda.set_device(self.device)
            if rank == 0:
                self.ranks = distributed.Ranks(spec, self.device)
            else:
                distributed.join_group(self.device, rank)
        self.settings = configure(spec, self.device)
        self.memory_format = torch.channels_last if self.graphed else torch.contiguous_format
        # PyTorch's one graph mode is torch.compile: a debug probe's "graph" execution is eager
        # too, unless the spec compiles.
        self.compiled = spec.compile and not inject.eager
        self.settings["execution"] = "torch.compile" if self.compiled else "eager"
        self.framework_version = torch.__version__
        cuda = self.device.type == "cuda"
        self.device_name = torch.cuda.get_device_name(self.device) if cuda else "cpu"
        self.cuda_device_index = self.device.index if cuda else None
        self.devices = dist.get_world_size() if spec.gpus > 1 else 1
        rank_pids = [p.pid for p in self.ranks.processes] if self.ranks else []
        self.device_pids = [os.getpid(), *rank_pids]
        if spec.gpus > 1:
            norm = "SyncBatchNorm" if cuda else "fwbench's GlobalBatchNorm: no SyncBatchNorm on CPU"
            self.settings["data_parallel"] = (
                f"DistributedDataParallel, {self.devices} processes over "
                f"{distributed.backend(self.device)}; BatchNorm over the global batch ({norm}); "
                "evaluation on rank 0"
            )

    def load(self, dataset: datasets.Dataset) -> None:
        self.pipeline = Pipeline(
            dataset,
            self.device,
            self.spec.batch_size,
            self.memory_format,
            devices=self.spec.gpus,
            rank=self.rank,
        )
        self.dataset = dataset
        self.train_batch = self.inject.batches(self.pipeline.train_batch, "NCHW", torch.permute)

    def build(self, model_spec: pb.ModelSpec, total_steps: int) -> None:
        model = models.build(model_spec, self.spec.seed)
        if self.spec.gpus > 1:
            model = distributed.synchronise_batchnorm(model, self.device)
        self.model = model.to(self.device, memory_format=self.memory_format)
        optimizer, self.lr_schedule = make_optimizer(
            self.spec, self.model, total_steps, capturable=self.graphed
        )
        forward = self.model
        if self.spec.gpus > 1:
            # Every rank starts from rank 0's weights and averages its gradients with the others'
            # in the backward pass. BatchNorm's buffers are equal on every rank already (their
            # statistics are the global batch's): broadcasting them every step would be waste.
            forward = torch.nn.parallel.DistributedDataParallel(
                forward,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
            )
        if self.compiled:
            forward = torch.compile(forward)
        self.train_step = TrainStep(self.spec, forward, optimizer, self.device)
        self.step = self.train_step
        sync(self.device)

    def fit(self, recorder) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        harness.run_epochs(self.spec, recorder, self, self.dataset)
        if self.ranks is not None:
            self.ranks.join(stopped_early=recorder.diverged)

    # --- the loop, each epoch --------------------------------------------------------------

    def begin_epoch(self, plan: schedule.EpochPlan) -> None:
        self.pipeline.set_epoch(plan)
        self.model.train()
        sync(self.device)

    def zero_sums(self) -> None:
        self.train_step.loss_sum.zero_()
        self.train_step.correct.zero_()

    def train_steps(self, first: int, count: int) -> None:
        """One step (steps_per_call is 1): batch `first`."""
        x, y = self.train_batch(first)
        if self.graphed and self.step is self.train_step:
            self.step = CapturedStep(self.train_step, self.spec.batch_size, x, y)
        self.step(x, y)
        self.lr_schedule.step()

    def window_loss(self, steps: int) -> float:
        return (self.train_step.window_loss / steps).item()

    def window_reported(self) -> None:
        self.train_step.window_loss.zero_()

    def evaluate(self) -> tuple[float, np.ndarray]:
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        predicted = []
        with torch.inference_mode(), autocast(self.spec, self.device):
            for x, y in self.pipeline.test_batches():
                logits = self.model(x)
                loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
                predicted.append(logits.argmax(1))
        count = len(self.pipeline.test_labels)
        # .item() and .cpu() synchronise.
        return loss_sum.item() / count, torch.cat(predicted).cpu().numpy()

    def epoch_sums(self) -> tuple[float, int]:
        if self.spec.gpus > 1:
            # Each rank summed its share: the epoch's are all of them together.
            dist.all_reduce(self.train_step.loss_sum)
            dist.all_reduce(self.train_step.correct)
        return self.train_step.loss_sum.item(), self.train_step.correct.item()

    # --- after training --------------------------------------------------------------------

    def canonical_weights(self) -> dict[str, np.ndarray]:
        return models.canonical_weights(self.model, self.spec.model)

    def peak_memory(self) -> dict[str, int]:
        if self.device.type != "cuda":
            return {}
        return {
            "peak_framework_mem_bytes": torch.cuda.max_memory_allocated(self.device),
            "peak_framework_reserved_bytes": torch.cuda.max_memory_reserved(self.device),
        }

    def deployment(self, diverged: bool) -> pb.Deployment:
        """The trained model exported in PyTorch's serving formats and measured, against its own
        eval-mode outputs in strict fp32 (services/common/deploy.py)."""
        serving.strict_fp32()
        self.model.eval()
        probe = torch.from_numpy(deploy.probe(self.spec.seed)).permute(0, 3, 1, 2)
        probe = probe.contiguous().to(self.device)
        with torch.inference_mode():
            reference = self.model(probe).float().cpu().numpy()
        formats = serving.formats(self.model, probe)
        return deploy.measure(self.spec, formats, reference, str(self.device), diverged)


def train(spec: pb.TrainSpec, recorder) -> None:
    harness.train(spec, recorder, Training)


def probe_train_losses(model, spec: pb.TrainSpec, probe: torch.Tensor, steps: int) -> list[float]:
    """The losses of `steps` training steps on the probe batch, taken as train() takes them."""
    labels = torch.from_numpy(datasets.probe_labels(spec.seed, len(probe), spec.model.num_classes))
    optimizer, lr_schedule = make_optimizer(spec, model, steps)
    model.train()
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(probe), labels, label_smoothing=spec.optimizer.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()
        losses.append(loss.item())
    return losses


def inspect(request: pb.InspectRequest) -> pb.ModelReport:
    """Model size, probe logits and probe training losses, on the CPU in fp32 (logits in eval
    mode) so that frameworks compare the same arithmetic."""
    spec = request.spec
    torch.manual_seed(spec.seed)
    model = models.build(spec.model, spec.seed).eval()
    probe = torch.from_numpy(datasets.probe_batch(spec.seed, request.probe_batch_size))
    probe = probe.permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        logits = model(probe)
    description = models.describe(model, spec.model)
    losses = probe_train_losses(model, spec, probe, request.train_steps)
    return model_report.report(request, FRAMEWORK, logits.numpy(), description, losses)
