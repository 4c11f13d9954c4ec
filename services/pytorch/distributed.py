"""Data parallelism the way PyTorch users run it: one process per device, as torchrun starts
them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), DistributedDataParallel averaging the
gradients, NCCL between GPUs and gloo between CPU processes.

The worker that serves a Train request is rank 0: it starts ranks 1..N-1 as
`python -m services.pytorch.distributed` (the spec on their stdin), trains its own share and
reports for all (services/common/harness.py `train`); the others follow (harness `follow`). The
run's job stays one device's job on the global batch: BatchNorm takes its batch statistics over
every device's share (torch's SyncBatchNorm on GPUs; on the CPU, where SyncBatchNorm does not
run, GlobalBatchNorm below), and the epoch's sums are added across ranks.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

from fwbench.v1 import trainer_pb2 as pb
from services.common import harness

LOCALHOST = "127.0.0.1"
# How long a collective waits for its peers: the other ranks wait at the epoch's end while rank
# 0 evaluates alone, which on a CPU takes minutes for a large test split. A rank that dies closes
# its connections, which its peers see at once, whatever this timeout.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=1)
# A rank that has trained its last step ends within seconds; more means it hangs.
EXIT_TIMEOUT_S = 60


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


class Ranks:
    """Rank 0's view of the process group: the other ranks' processes, started and ended here."""

    def __init__(self, spec: pb.TrainSpec, device: torch.device):
        # Rank 0 holds the group's store, on a port the kernel picks (no race for a free one);
        # the other ranks find it as torchrun's would, through MASTER_ADDR and MASTER_PORT.
        store = dist.TCPStore(LOCALHOST, 0, spec.gpus, is_master=True, wait_for_workers=False)
        env = os.environ | {
            "MASTER_ADDR": LOCALHOST,
            "MASTER_PORT": str(store.port),
            "WORLD_SIZE": str(spec.gpus),
        }
        self.processes = []
        for rank in range(1, spec.gpus):
            process = subprocess.Popen(
                [sys.executable, "-m", "services.pytorch.distributed"],
                stdin=subprocess.PIPE,
                env=env | {"RANK": str(rank)},
            )
            process.stdin.write(spec.SerializeToString())
            process.stdin.close()
            self.processes.append(process)
        # Whatever ends rank 0 (an error, a cancel) ends the ranks it started.
        atexit.register(self.stop)
        dist.init_process_group(
            backend(device),
            store=store,
            rank=0,
            world_size=spec.gpus,
            timeout=COLLECTIVE_TIMEOUT,
        )

    def join(self, stopped_early: bool) -> None:
        """After training: the other ranks end by themselves, unless training stopped early (a
        divergence), which leaves them waiting for steps that never come."""
        if stopped_early:
            self.stop()
        for rank, process in enumerate(self.processes, start=1):
            code = process.wait(timeout=EXIT_TIMEOUT_S)
            if code != 0 and not stopped_early:
                raise RuntimeError(
                    f"rank {rank} of the data-parallel group exited with code {code}; its log is "
                    "in the service's"
                )
        dist.destroy_process_group()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def join_group(device: torch.device, rank: int) -> None:
    """A rank other than 0 joins the group that rank 0 made, at the store torchrun's environment
    names. (init_method "env://" would keep its keys under another prefix than rank 0's store.)"""
    world_size = int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False
    )
    dist.init_process_group(
        backend(device), store=store, rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT
    )


class GlobalBatchNorm(torch.nn.BatchNorm2d):
    """BatchNorm2d over the global batch, for CPU processes over gloo (torch's SyncBatchNorm needs
    a GPU): in training the batch's mean and variance are those of every rank's share together,
    all-reduced differentiably (the gradients flow back to every rank's share, as they do through
    SyncBatchNorm), and the running statistics are updated as BatchNorm2d updates them (with the
    unbiased variance), identically on every rank. Two passes (the mean, then the squared
    deviations from it), as BatchNorm2d computes, rather than the cancelling E[x²] - E[x]²."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype)
        sums = dist_nn.all_reduce(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x - mean[None, :, None, None]
        var = dist_nn.all_reduce((centred * centred).sum(dims)) / n
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1), self.momentum)
            self.num_batches_tracked += 1
        scale = self.weight * torch.rsqrt(var + self.eps)
        return centred * scale[None, :, None, None] + self.bias[None, :, None, None]


def synchronise_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model with every BatchNorm taking its statistics over the global batch."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if type(module) is torch.nn.BatchNorm2d:
            # Same parameters, buffers and settings; only the forward pass differs.
            module.__class__ = GlobalBatchNorm
    return model


def main() -> None:
    """A rank other than 0: the spec from stdin, then the same training as rank 0's, silent."""
    # Here, not at the top: the trainer imports this module.
    from services.pytorch import trainer

    spec = pb.TrainSpec.FromString(sys.stdin.buffer.read())
    harness.follow(spec, functools.partial(trainer.Training, rank=int(os.environ["RANK"])))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
