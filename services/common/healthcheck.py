"""Container health: `python -m services.common.healthcheck [HOST:PORT]` exits 0 when the service
answers SERVING on the standard grpc.health.v1 service, 1 otherwise.

The Dockerfiles' HEALTHCHECK and docker-compose.yml run it inside each service container. It
imports no framework and no generated code, so a check costs a fraction of a second.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
SERVICE = "fwbench.v1.TrainerService"
# Well under the healthcheck's own timeout, so a hung server reads as unhealthy, not as a timeout.
CHECK_TIMEOUT_S = 3.0


def check(address: str) -> tuple[bool, str]:
    """(serving, what the service said) for the TrainerService at address."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=CHECK_TIMEOUT_S
            )
        except grpc.RpcError as e:
            return False, f"{e.code().name}: {e.details()}"
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, name


def main(argv: list[str]) -> int:
    address = argv[0] if argv else DEFAULT_ADDRESS
    serving, said = check(address)
    print(f"{SERVICE} at {address}: {said}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
