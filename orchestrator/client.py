"""The orchestrator's side of the contract: a thin client of one framework service."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fwbench.v1 import trainer_pb2 as pb
from fwbench.v1 import trainer_pb2_grpc as pb_grpc

# Describe and Inspect start a worker that imports the framework (TensorFlow: ~10 s cold).
CALL_DEADLINE_S = 300


class ServiceUnavailable(Exception):
    pass


class TrainerClient:
    def __init__(self, framework: str, address: str):
        self.framework = framework
        self.address = address
        # Progress is small, but a stream can be long: no message size surprises, keepalive on.
        self._channel = grpc.insecure_channel(address, options=[("grpc.keepalive_time_ms", 30_000)])
        self._stub = pb_grpc.TrainerServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def wait_until_serving(self, timeout_s: float) -> None:
        """Blocks until the service's health answers SERVING, or raises ServiceUnavailable."""
        try:
            status = self._health.Check(
                health_pb2.HealthCheckRequest(service="fwbench.v1.TrainerService"),
                wait_for_ready=True,
                timeout=timeout_s,
            ).status
        except grpc.RpcError as e:
            raise ServiceUnavailable(
                f"the {self.framework} service at {self.address} did not answer within "
                f"{timeout_s:.0f} s ({e.code().name}): is it running and reachable?"
            ) from e
        if status != health_pb2.HealthCheckResponse.SERVING:
            raise ServiceUnavailable(
                f"the {self.framework} service at {self.address} is "
                f"{health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
            )

    def describe(self) -> pb.DescribeResponse:
        return self._stub.Describe(
            pb.DescribeRequest(), wait_for_ready=True, timeout=CALL_DEADLINE_S
        )

    def inspect(
        self, spec: pb.TrainSpec, probe_batch_size: int = 8, train_steps: int = 0
    ) -> pb.ModelReport:
        return self._stub.Inspect(
            pb.InspectRequest(
                spec=spec, probe_batch_size=probe_batch_size, train_steps=train_steps
            ),
            wait_for_ready=True,
            timeout=CALL_DEADLINE_S,
        )

    def train(self, spec: pb.TrainSpec):
        """The event stream of a run; call .cancel() on it to stop the run."""
        # No deadline: a run's length is the experiment's, not the network's.
        return self._stub.Train(pb.TrainRequest(spec=spec), wait_for_ready=True)

    def close(self) -> None:
        self._channel.close()
