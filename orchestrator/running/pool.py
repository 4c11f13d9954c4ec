"""The services an experiment runs on, as a pool: one or more per framework.

Each member knows what it trains on (its placement: the GPUs' NVML UUIDs from Describe, or the CPUs
of its node). Two runs train at once only on members with different placements, so two runs never
share a GPU, and services without a GPU on one machine never train at once (each would slow the
other). With one service per framework on one GPU, as `docker compose up` or the local launcher
start them, that is one run after another.
"""

from __future__ import annotations

import dataclasses

import grpc

from fwbench.v1 import trainer_pb2 as pb
from orchestrator.running.client import ServiceUnavailable, TrainerClient, mismatch
from orchestrator.running.launchers import (
    REMOTE_CONNECT_TIMEOUT_S,
    Endpoint,
    Launched,
    LauncherError,
)


@dataclasses.dataclass
class Member:
    endpoint: Endpoint
    client: TrainerClient
    described: pb.DescribeResponse

    @property
    def framework(self) -> str:
        return self.endpoint.framework

    @property
    def placement(self) -> str:
        """What this member trains on: its GPUs, or the CPUs of its node."""
        uuids = self.described.gpu_uuids
        return ",".join(sorted(uuids)) if uuids else f"cpu@{self.described.node}"

    @property
    def name(self) -> str:
        return f"{self.framework}@{self.endpoint.address}"


class Pool:
    """Clients of the launched services, each asked Describe once."""

    def __init__(self, launched: Launched):
        self._launched = launched
        self.members: list[Member] = [self._member(e) for e in launched.endpoints]

    def _member(self, endpoint: Endpoint) -> Member:
        client = TrainerClient(endpoint.framework, endpoint.address, self._launched.secured)
        try:
            described = client.describe()
        except grpc.RpcError as e:
            client.close()
            hint = (
                ": pass the service's token (--token-file or $FWBENCH_TOKEN)"
                if e.code() == grpc.StatusCode.UNAUTHENTICATED
                else ""
            )
            raise LauncherError(
                f"the {endpoint.framework} service at {endpoint.address} refused Describe "
                f"({e.code().name}: {e.details()}){hint}"
            ) from e
        if described.framework != endpoint.framework:
            client.close()
            raise LauncherError(mismatch(endpoint.address, endpoint.framework, described.framework))
        return Member(endpoint, client, described)

    def frameworks(self) -> list[str]:
        return list(dict.fromkeys(m.framework for m in self.members))

    def first(self, framework: str) -> TrainerClient:
        """A client of the framework (for Inspect, which any member answers alike)."""
        return next(m.client for m in self.members if m.framework == framework)

    def clients(self) -> dict[str, TrainerClient]:
        """{framework: its first client}."""
        return {f: self.first(f) for f in self.frameworks()}

    def parallel(self) -> bool:
        """Whether any two members may train at once."""
        return len({m.placement for m in self.members}) > 1

    def restart(self, member: Member) -> Member | None:
        """After a run lost its service, the slow part of bringing it back (a process to start, a
        remote service to wait for), safe on any thread since it changes no membership: the member
        itself when it serves again by its own means (compose and Kubernetes restart services), a
        new member in its place when the local launcher restarted it, or None when it is gone.
        `replace` then applies that."""
        endpoint = self._launched.revive(member.endpoint)
        if endpoint is not None:
            return self._member(endpoint)
        try:
            member.client.wait_until_serving(REMOTE_CONNECT_TIMEOUT_S, fail_fast=True)
            return member
        except ServiceUnavailable:
            return None

    def replace(self, member: Member, restarted: Member | None) -> None:
        """The outcome of `restart`: a member that is gone leaves the pool, and its framework's
        remaining runs go to the other members."""
        if restarted is member:
            return
        self.members.remove(member)
        member.client.close()
        if restarted is not None:
            self.members.append(restarted)

    def close(self) -> None:
        for member in self.members:
            member.client.close()
