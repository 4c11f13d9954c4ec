"""PyTorch trainer: the canonical training loop, the way PyTorch users write it.

The dataset lives on the device as uint8 tensors (GPU-resident on CUDA), and each batch is cut,
augmented and normalised there from the shared batch schedule, so no host-side data loader sits
in the measured loop. The loop reads top to bottom: set up, train an epoch, evaluate, report.
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from fwbench.v1 import trainer_pb2 as pb
from services.common import data as datasets
from services.common import schedule
from services.common.spec import WEIGHT_DECAY, SpecError
from services.pytorch import models

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
        library_versions={"torchvision": torchvision.__version__, "numpy": np.__version__},
        hostname=platform.node(),
    )


def resolve_device(name: str) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SpecError(
            "device: 'cuda' was requested but PyTorch sees no CUDA device "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "use device 'cpu' or 'auto'"
        )
    return torch.device("cuda", 0)


def configure(spec: pb.TrainSpec, device: torch.device) -> dict[str, str]:
    """Applies the spec's speed/precision knobs and returns them as resolved, for the results."""
    torch.manual_seed(spec.seed)
    # friction: PyTorch's defaults differ between convs (TF32 on) and matmuls (off): set both.
    tf32 = spec.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = spec.cudnn_benchmark
    return {
        "device": str(device),
        "precision": spec.precision,
        "tf32_matmul": str(tf32).lower(),
        "tf32_conv": str(tf32).lower(),
        "cudnn_benchmark": str(spec.cudnn_benchmark).lower(),
        "compile": "torch.compile" if spec.compile else "eager",
        "weight_decay": WEIGHT_DECAY[spec.optimizer.name],
        "threads": str(torch.get_num_threads()),
    }


class Pipeline:
    """The dataset on `device` and the batches of the shared schedule, cut there."""

    def __init__(self, dataset: datasets.Dataset, device: torch.device, batch_size: int):
        self.device = device
        self.batch_size = batch_size
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

    def augmented(self, k: int) -> torch.Tensor:
        """Batch k of the epoch as uint8 NHWC, after crop and flip."""
        part = slice(k * self.batch_size, (k + 1) * self.batch_size)
        order, dy, dx, flip = (a[part] for a in self.plan)
        rows, cols = schedule.crop_indices(dy, dx, flip, self.arange)
        images = self.train_padded[order]
        batch = torch.arange(len(order), device=self.device)[:, None, None]
        return images[batch, rows[:, :, None], cols[:, None, :]]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(255)
        return ((x - self.mean) / self.std).contiguous()

    def train_batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = self.plan[0][k * self.batch_size : (k + 1) * self.batch_size]
        return self.normalise(self.augmented(k)), self.train_labels[order]

    def test_batches(self):
        for start in range(0, len(self.test_labels), self.batch_size):
            end = start + self.batch_size
            yield self.normalise(self.test_images[start:end]), self.test_labels[start:end]


def make_optimizer(spec: pb.TrainSpec, model: torch.nn.Module, total_steps: int):
    o = spec.optimizer
    params = model.parameters()
    if o.name == "sgd":
        optimizer = torch.optim.SGD(
            params,
            lr=o.learning_rate,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
        )
    elif o.name == "adam":
        optimizer = torch.optim.Adam(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    if o.lr_schedule == "cosine":
        schedule_fn = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    else:
        schedule_fn = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return optimizer, schedule_fn


def autocast(spec: pb.TrainSpec, device: torch.device):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(model, pipeline: Pipeline, spec: pb.TrainSpec, device) -> tuple[float, float]:
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    with torch.inference_mode(), autocast(spec, device):
        for x, y in pipeline.test_batches():
            logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    count = len(pipeline.test_labels)
    return loss_sum.item() / count, correct.item() / count  # .item() synchronises


def train(spec: pb.TrainSpec, recorder) -> None:
    device = resolve_device(spec.device)
    settings = configure(spec, device)

    start = time.perf_counter()
    dataset = datasets.load(spec)
    pipeline = Pipeline(dataset, device, spec.batch_size)
    data_load_s = time.perf_counter() - start

    start = time.perf_counter()
    train_samples = len(dataset.train_labels)
    steps = schedule.steps_per_epoch(train_samples, spec.batch_size)
    model = models.build(spec.model, spec.seed).to(device)
    optimizer, lr_schedule = make_optimizer(spec, model, steps * spec.epochs)
    forward = torch.compile(model) if spec.compile else model
    # Loss scaling is needed for fp16 only; with it disabled the scaler is a no-op.
    scaler = torch.amp.GradScaler(device.type, enabled=spec.precision == "fp16")
    sync(device)
    build_s = time.perf_counter() - start

    recorder.run_started(
        framework_version=torch.__version__,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        cuda_device_index=device.index if device.type == "cuda" else None,
        train_samples=train_samples,
        test_samples=len(dataset.test_labels),
        steps_per_epoch=steps,
        data_load_s=data_load_s,
        build_s=build_s,
        settings=settings | {"data": dataset.description},
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    recorder.train_begin()
    for epoch in range(spec.epochs):
        pipeline.set_epoch(schedule.epoch_plan(spec.seed, epoch, train_samples, spec.data.augment))
        model.train()
        sync(device)
        epoch_start = time.perf_counter()
        # Sums stay on the device: reading them every step would synchronise every step.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        window_loss = torch.zeros((), device=device)
        window_steps = 0
        for k in range(steps):
            x, y = pipeline.train_batch(k)
            with autocast(spec, device):
                logits = forward(x)
                loss = F.cross_entropy(
                    logits.float(), y, label_smoothing=spec.optimizer.label_smoothing
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            lr_schedule.step()

            loss = loss.detach()
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == y).sum()
            window_loss += loss
            window_steps += 1
            if recorder.step_end(epoch, k + 1):
                recorder.progress(epoch, k + 1, (window_loss / window_steps).item())
                if recorder.diverged:
                    break
                window_loss.zero_()
                window_steps = 0
        if recorder.diverged:
            # Training further on NaN/inf weights would measure nothing: what was measured stays.
            break
        # The epoch's last step always reports, so the device is synchronised here.
        train_time_s = time.perf_counter() - epoch_start

        eval_start = time.perf_counter()
        test_loss, test_accuracy = evaluate(model, pipeline, spec, device)
        eval_time_s = time.perf_counter() - eval_start
        recorder.epoch_end(
            epoch,
            train_loss=loss_sum.item() / train_samples,
            train_accuracy=correct.item() / train_samples,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            train_time_s=train_time_s,
            eval_time_s=eval_time_s,
        )

    if device.type == "cuda":
        recorder.run_end(
            peak_framework_mem_bytes=torch.cuda.max_memory_allocated(device),
            peak_framework_reserved_bytes=torch.cuda.max_memory_reserved(device),
        )
    else:
        recorder.run_end()


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
    return pb.ModelReport(
        framework=FRAMEWORK,
        model=spec.model.name,
        probe_logits=logits.flatten().tolist(),
        probe_batch_size=request.probe_batch_size,
        probe_train_losses=probe_train_losses(model, spec, probe, request.train_steps),
        **description,
    )
