"""Run in the PyTorch environment by tests/test_deploy.py: the deployment harness given a model
that torch.export cannot export (its forward branches on its data), and a real model measured
against outputs it does not give. Writes both Deployments as JSON to the path in argv[1]."""

from __future__ import annotations

import sys

import torch
from google.protobuf import json_format

from fwbench.v1 import trainer_pb2 as pb
from services.common import deploy
from services.common.spec import with_defaults
from services.pytorch import models, serving


class DataDependent(torch.nn.Module):
    """A branch on a tensor's value: torch.export traces shapes, not values, and refuses it."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        logits = self.linear(x.flatten(1))
        if logits.sum() > 0:
            return logits
        return -logits


spec = with_defaults(
    pb.TrainSpec(
        model=pb.ModelSpec(name="mobilenet_v2", num_classes=10),
        deploy=pb.DeploySpec(
            deploy_enabled=True, deploy_warmup_iterations=1, deploy_timed_iterations=2
        ),
    )
)
probe = torch.from_numpy(deploy.probe(spec.seed)).permute(0, 3, 1, 2).contiguous()

unexportable = DataDependent().eval()
with torch.inference_mode():
    reference = unexportable(probe).numpy()
failed = deploy.measure(spec, serving.formats(unexportable, probe), reference, "cpu")

model = models.build(spec.model, spec.seed).eval()
with torch.inference_mode():
    # Outputs off by 1: what the artifact gives can never be within the tolerance.
    wrong = model(probe).numpy() + 1
mismatched = deploy.measure(spec, serving.formats(model, probe)[:1], wrong, "cpu")

with open(sys.argv[1], "w") as out:
    out.write(
        json_format.MessageToJson(
            pb.TrainEvent(deployment=pb.Deployment(results=[*failed.results, *mismatched.results]))
        )
    )
