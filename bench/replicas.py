"""Replicas bench: the embedded defaults beside shared engines, and two replicas
against one.

Three ``retouch-server`` processes in one run: one on the embedded defaults (SQLite,
files, token buckets in memory), two sharing PostgreSQL, Redis and an S3 bucket on
SeaweedFS (started here as the tests start them). Figures:

- p50 latency of a 1024x1024 and of a 64x64 inpaint (the fixed cost), embedded against
  shared, calls interleaved so both see the same machine;
- jobs per second of 64x64 inpaints from concurrent clients against one shared replica,
  then spread round-robin over both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from retouch.v1 import image_edit_pb2_grpc
from scripts.run_replicas import AWS, shared_settings
from tests.engines.postgres import PostgresServer
from tests.engines.redis import started_redis
from tests.engines.seaweed import started_seaweedfs

from . import client
from .processes import retouch_server
from .stats import Summary
from .workload import Workload, make_workload

BIG_SAMPLES = 20
TINY_SAMPLES = 100
CLIENTS = 16
JOBS_PER_CLIENT = 25


@dataclass(frozen=True, slots=True)
class ReplicaFigures:
    """What the replicas bench measured."""

    embedded_big: Summary
    shared_big: Summary
    embedded_tiny: Summary
    shared_tiny: Summary
    one_replica_jobs_s: float
    two_replicas_jobs_s: float


@contextlib.contextmanager
def _servers(root: Path) -> Iterator[tuple[int, int, int]]:
    with (
        PostgresServer.running() as postgres,
        started_redis() as redis,
        started_seaweedfs() as seaweed,
        _aws_credentials(),
    ):
        shared = shared_settings(postgres.new_database(), redis.url, seaweed.url("bench"))
        # The replicas presign S3 URLs; none needs the HTTP results route on its default port.
        shared += 'results_http_listen = "127.0.0.1:0"\n'
        with (
            retouch_server(root / "embedded", 'results_http_listen = "127.0.0.1:0"') as embedded,
            retouch_server(root / "first", shared) as first,
            retouch_server(root / "second", shared) as second,
        ):
            yield embedded, first, second


@contextlib.contextmanager
def _aws_credentials() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in AWS}
    os.environ.update(AWS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _latencies(
    embedded: int, shared: int, workload: Workload, samples: int
) -> tuple[Summary, Summary]:
    async with client.channel(embedded) as one, client.channel(shared) as other:
        stubs = (image_edit_pb2_grpc.ImageEditStub(one), image_edit_pb2_grpc.ImageEditStub(other))
        for stub in stubs:
            for _ in range(3):
                await client.inpaint(stub, workload.request())
        times: tuple[list[float], list[float]] = ([], [])
        for i in range(samples):
            # Alternate which goes first, so neither always runs on a just-warmed cache.
            for which in (i % 2, 1 - i % 2):
                trace = await client.inpaint(stubs[which], workload.request())
                times[which].append(trace.total_ms)
    return Summary.of(times[0]), Summary.of(times[1])


async def _throughput(ports: list[int], workload: Workload) -> float:
    channels = [client.channel(ports[i % len(ports)]) for i in range(CLIENTS)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)

        async def one_client(channel: aio.Channel) -> None:
            stub = image_edit_pb2_grpc.ImageEditStub(channel)
            for _ in range(JOBS_PER_CLIENT):
                await client.inpaint(stub, workload.request())

        started = time.perf_counter()
        await asyncio.gather(*(one_client(channel) for channel in channels))
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return CLIENTS * JOBS_PER_CLIENT / seconds


async def run_replicas_bench() -> ReplicaFigures:
    """Start PostgreSQL and the three servers, measure, stop them."""
    big, tiny = make_workload(1024), make_workload(64)
    with (
        tempfile.TemporaryDirectory(prefix="retouch-replicas-bench-") as tmp,
        _servers(Path(tmp)) as (embedded, first, second),
    ):
        embedded_big, shared_big = await _latencies(embedded, first, big, BIG_SAMPLES)
        embedded_tiny, shared_tiny = await _latencies(embedded, first, tiny, TINY_SAMPLES)
        await _throughput([first, second], tiny)  # warm both
        one = await _throughput([first], tiny)
        two = await _throughput([first, second], tiny)
    return ReplicaFigures(embedded_big, shared_big, embedded_tiny, shared_tiny, one, two)


def render_replicas(figures: ReplicaFigures) -> str:
    """The replicas section of RESULTS.md."""
    return "\n".join(
        [
            "## Embedded and shared engines, one replica and two",
            "",
            "Embedded: SQLite, files, buckets in memory. Shared: PostgreSQL, Redis and S3 "
            "(SeaweedFS). The servers in their own processes, the figures from one run.",
            "",
            "| inpaint, end to end | embedded p50 / p90 (ms) | shared p50 / p90 (ms) |",
            "|---|---|---|",
            f"| 1024x1024 ({BIG_SAMPLES} calls each) | {_ms(figures.embedded_big)} "
            f"| {_ms(figures.shared_big)} |",
            f"| 64x64, the fixed cost ({TINY_SAMPLES} calls each) | {_ms(figures.embedded_tiny)} "
            f"| {_ms(figures.shared_tiny)} |",
            "",
            f"{CLIENTS} concurrent clients x {JOBS_PER_CLIENT} 64x64 jobs on shared engines:",
            "",
            "| replicas | jobs per second |",
            "|---|---|",
            f"| one | {figures.one_replica_jobs_s:.0f} |",
            f"| two, round-robin | {figures.two_replicas_jobs_s:.0f} "
            f"({figures.two_replicas_jobs_s / figures.one_replica_jobs_s:.2f}x) |",
            "",
        ]
    )


def _ms(summary: Summary) -> str:
    return f"{summary.p50:.1f} / {summary.p90:.1f}"


if __name__ == "__main__":
    print(render_replicas(asyncio.run(run_replicas_bench())))
