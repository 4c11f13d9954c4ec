"""Holds the orchestrator's Job until what it needs is there: the prepared dataset and every
trainer of each pool. Runs as the Job's init container (standard library only):

    python wait_for_pool.py --timeout-s 3600 --file /data/cifar10/meta.json \
        --expect pytorch.fwbench.svc.cluster.local=2 --expect tensorflow.fwbench.svc.cluster.local=2

A headless Service's name resolves to the address of each *ready* pod, so "N addresses" means N
trainers that answer the gRPC health check. The orchestrator reads the pool from DNS once; started
on the first ready pod, it would leave the GPUs of the others idle for the whole suite. Images of
several GB take minutes to pull and CIFAR-10 minutes to prepare, longer than the CLI's own ~15 s
of retries. Exit 0 when all is there, 1 at the deadline (saying what is missing), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path


def ready_addresses(host: str) -> set[str]:
    """The addresses host resolves to now; none while the name does not exist (no ready pod)."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except socket.gaierror:
        return set()


def expectation(text: str) -> tuple[str, int]:
    host, _, count = text.rpartition("=")
    if not host or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST=COUNT with COUNT >= 1")
    return host, int(count)


def missing(files: list[Path], expected: list[tuple[str, int]]) -> list[str]:
    """What is not there yet, one phrase each."""
    gaps = [f"{file} does not exist yet" for file in files if not file.exists()]
    for host, count in expected:
        ready = len(ready_addresses(host))
        if ready < count:
            gaps.append(f"{host}: {ready} of {count} trainers ready")
    return gaps


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, action="append", default=[], help="must exist")
    parser.add_argument(
        "--expect",
        type=expectation,
        action="append",
        default=[],
        metavar="HOST=COUNT",
        help="HOST must resolve to at least COUNT addresses",
    )
    parser.add_argument("--timeout-s", type=float, required=True)
    parser.add_argument("--poll-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout_s
    said = None
    while gaps := missing(args.file, args.expect):
        if gaps != said:  # a line per change, not per poll
            print("waiting: " + "; ".join(gaps), flush=True)
            said = gaps
        if time.monotonic() >= deadline:
            print(
                f"gave up after {args.timeout_s:g} s: {'; '.join(gaps)}. "
                "`kubectl get pods,jobs` in this namespace shows which pod is not ready and why "
                "(an image that cannot be pulled, no free GPU, the data Job failing)",
                file=sys.stderr,
            )
            return 1
        time.sleep(args.poll_s)
    print("ready: " + ", ".join(f"{host} ({count})" for host, count in args.expect), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
