"""Container health: `python -m services.common.healthcheck [HOST:PORT] [--ca-file PEM
[--server-name NAME]]` exits 0 when the service answers SERVING on the standard grpc.health.v1
service, 1 otherwise. --ca-file defaults to $FWBENCH_TLS_CA.

services/Dockerfile's HEALTHCHECK and docker-compose.yml run it inside each service container. It
imports no framework and no generated code, so a check costs a fraction of a second. Health needs
no token; a service with TLS needs --ca-file (and --server-name when its certificate does not
name the address checked, e.g. 127.0.0.1 inside the container).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import security

DEFAULT_ADDRESS = "127.0.0.1:50051"
SERVICE = "fwbench.v1.TrainerService"
# Well under the healthcheck's own timeout, so a hung server reads as unhealthy, not as a timeout.
CHECK_TIMEOUT_S = 3.0


def check(
    address: str, ca_file: Path | None = None, server_name: str | None = None
) -> tuple[bool, str]:
    """(serving, what the service said) for the TrainerService at address."""
    with security.channel(address, ca_file=ca_file, server_name=server_name) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=CHECK_TIMEOUT_S
            )
        except grpc.RpcError as e:
            return False, f"{e.code().name}: {e.details()}"
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, name


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when a fwbench service is SERVING.")
    parser.add_argument("address", nargs="?", default=DEFAULT_ADDRESS)
    # From the environment too, so that one healthcheck command serves a plaintext service and,
    # under docker-compose.tls.yml, a TLS one.
    ca_file = os.environ.get(security.TLS_CA_ENV)
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=Path(ca_file) if ca_file else None,
        help=f"CA of the service's TLS certificate (default: ${security.TLS_CA_ENV} when set)",
    )
    parser.add_argument("--server-name", help="the name its certificate gives")
    args = parser.parse_args(argv)
    serving, said = check(args.address, args.ca_file, args.server_name)
    print(f"{SERVICE} at {args.address}: {said}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
