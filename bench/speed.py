"""The speed bench: retouch as a separate process, timed from a grpc.aio client.

Every figure comes from one run, so the service and its baselines share the machine's
conditions; each baseline is measured interleaved with the figure it is compared to.

1. End-to-end latency of a 1024x1024 inpaint with a 10 % hole, inline result: call
   start to the Completed event, sequential calls.
2. Service overhead: that latency minus the same decode -> inpaint -> composite ->
   encode run in this process (:mod:`bench.inprocess`), at p50.
3. Throughput with concurrent clients, each on its own channel, and whether every
   stream kept receiving Progress events.
4. Fixed cost: a 64x64 job's latency minus a bare grpc.aio echo's
   (:mod:`bench.echo_server`) whose stream has the job's shape.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from retouch.providers.opencv import OpenCVProvider
from retouch.v1 import image_edit_pb2_grpc

from . import client, interleave
from .inprocess import STAGES, InProcessPipeline
from .processes import echo_server, retouch_server
from .stats import Figure, Summary
from .workload import Workload, make_workload

E2E_P50_MS = 130.0
OVERHEAD_P50_MS = 10.0
THROUGHPUT_JOBS_S = 10.0
TINY_OVERHEAD_P50_MS = 3.0


@dataclass(frozen=True, slots=True)
class SpeedConfig:
    """How many calls each measurement makes."""

    samples: int = 30
    warmup: int = 3
    tiny_samples: int = 150
    clients: int = 8
    jobs_per_client: int = 6


@dataclass(frozen=True, slots=True)
class Concurrency:
    """Concurrent clients, each on its own channel, running jobs one after another."""

    clients: int
    jobs_per_client: int
    seconds: float
    latency: Summary
    min_progress_events: int
    max_gap_ms: float
    max_gap_between: str
    """The kinds of the two events around the longest gap, e.g. ``accepted -> progress``."""

    @property
    def jobs_per_s(self) -> float:
        return self.clients * self.jobs_per_client / self.seconds


@dataclass(frozen=True, slots=True)
class SpeedResults:
    """Everything the speed bench measured."""

    config: SpeedConfig
    workload: str
    tiny_workload: str
    service: Summary
    first_event: Summary
    provider_ms: Summary
    in_process: Summary
    stages: dict[str, Summary]
    concurrency: Concurrency
    tiny: Summary
    echo: Summary
    echo_shape: str
    route: str
    """``provider/model`` every timed job ran on."""
    default_route: client.CallTrace
    """One 1024x1024 job that named no provider: where the router sends it, for the record."""

    def figures(self) -> list[Figure]:
        """The four targets of the issue, each with what was measured."""
        service, in_process, load = self.service, self.in_process, self.concurrency
        return [
            Figure(
                "End-to-end p50, 1024x1024 inpaint, inline result",
                service.p50,
                "ms",
                E2E_P50_MS,
                detail=f"p90 {service.p90:.1f}, mean {service.mean:.1f}, n={service.n}",
            ),
            Figure(
                "Service overhead p50 (service - in-process)",
                service.p50 - in_process.p50,
                "ms",
                OVERHEAD_P50_MS,
                detail=f"{service.p50:.1f} - {in_process.p50:.1f}",
            ),
            Figure(
                f"Throughput, {load.clients} concurrent clients",
                load.jobs_per_s,
                "jobs/s",
                THROUGHPUT_JOBS_S,
                at_least=True,
                detail=f"{load.clients * load.jobs_per_client} jobs in {load.seconds:.2f} s",
            ),
            Figure(
                "Progress events on every concurrent stream (min per stream)",
                load.min_progress_events,
                "events",
                1,
                at_least=True,
                decimals=0,
                detail=f"longest gap between events on any stream {load.max_gap_ms:.1f} ms "
                f"({load.max_gap_between})",
            ),
            Figure(
                "Fixed cost p50: 64x64 job - bare gRPC echo",
                self.tiny.p50 - self.echo.p50,
                "ms",
                TINY_OVERHEAD_P50_MS,
                decimals=2,
                detail=f"{self.tiny.p50:.2f} - {self.echo.p50:.2f}",
            ),
        ]


async def run_speed_bench(config: SpeedConfig | None = None) -> SpeedResults:
    """Start the servers, run every measurement, stop the servers."""
    config = config or SpeedConfig()
    big, tiny = make_workload(1024), make_workload(64)
    provider = OpenCVProvider()
    await provider.start({})
    try:
        with (
            tempfile.TemporaryDirectory(prefix="retouch-bench-") as data_dir,
            retouch_server(Path(data_dir)) as port,
        ):
            return await _measure(config, port, big, tiny, InProcessPipeline(provider))
    finally:
        await provider.aclose()


async def _measure(
    config: SpeedConfig, port: int, big: Workload, tiny: Workload, pipeline: InProcessPipeline
) -> SpeedResults:
    async with client.channel(port) as channel:
        stub = image_edit_pb2_grpc.ImageEditStub(channel)
        _say("warming up")
        for _ in range(config.warmup):
            await client.inpaint(stub, big.request())
            await pipeline.run(big)
        _say(f"{config.samples} sequential 1024x1024 jobs, interleaved with in-process runs")
        traces, stage_times = await interleave.pairs(
            config.samples, lambda: client.inpaint(stub, big.request()), lambda: pipeline.run(big)
        )
        _say(f"{config.clients} clients x {config.jobs_per_client} jobs")
        concurrency = await concurrent_jobs(port, big, config.clients, config.jobs_per_client)
        _say(f"{config.tiny_samples} 64x64 jobs, interleaved with bare gRPC echo calls")
        shape = await client.inpaint(stub, tiny.request())
        with echo_server(len(shape.arrivals), shape.last_bytes) as echo_port:
            tiny_ms, echo_ms = await _fixed_cost(stub, echo_port, tiny, config)
        _say("one 1024x1024 job naming no provider")
        default_route = await client.inpaint(stub, big.request(provider="", model=""))
    return SpeedResults(
        config=config,
        workload=big.describe(),
        tiny_workload=tiny.describe(),
        service=Summary.of([t.total_ms for t in traces]),
        first_event=Summary.of([t.first_event_ms for t in traces]),
        provider_ms=Summary.of([float(t.provider_ms) for t in traces]),
        in_process=Summary.of([s.total for s in stage_times]),
        stages={name: Summary.of([getattr(s, name) for s in stage_times]) for name in STAGES},
        concurrency=concurrency,
        tiny=Summary.of(tiny_ms),
        echo=Summary.of(echo_ms),
        echo_shape=(
            f"{len(shape.arrivals)} messages per call ({len(shape.arrivals) - 1} small, the "
            f"last {shape.last_bytes:,} B like the job's Completed event); request "
            f"{len(tiny.request().SerializeToString()):,} B like the job's"
        ),
        route=shape.route,
        default_route=default_route,
    )


async def concurrent_jobs(
    port: int, workload: Workload, clients: int, jobs_per_client: int
) -> Concurrency:
    """``clients`` clients, each on its own channel, each running ``jobs_per_client``
    jobs one after another."""
    channels = [client.channel(port) for _ in range(clients)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)

        async def one_client(channel: aio.Channel) -> list[client.CallTrace]:
            stub = image_edit_pb2_grpc.ImageEditStub(channel)
            return [await client.inpaint(stub, workload.request()) for _ in range(jobs_per_client)]

        started = time.perf_counter()
        per_client = await asyncio.gather(*(one_client(channel) for channel in channels))
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    traces = [trace for traces in per_client for trace in traces]
    gap_ms, gap_between = max(trace.max_gap for trace in traces)
    return Concurrency(
        clients=clients,
        jobs_per_client=jobs_per_client,
        seconds=seconds,
        latency=Summary.of([t.total_ms for t in traces]),
        min_progress_events=min(t.progress_events for t in traces),
        max_gap_ms=gap_ms,
        max_gap_between=gap_between,
    )


async def _fixed_cost(
    stub: image_edit_pb2_grpc.ImageEditAsyncStub,
    echo_port: int,
    tiny: Workload,
    config: SpeedConfig,
) -> tuple[list[float], list[float]]:
    payload = tiny.request().SerializeToString()
    async with client.channel(echo_port) as channel:
        echo = client.Echo(channel)
        for _ in range(config.warmup * 3):
            await echo(payload)
            await client.inpaint(stub, tiny.request())
        return await interleave.pairs(
            config.tiny_samples,
            lambda: client.total_ms(client.inpaint(stub, tiny.request())),
            lambda: client.total_ms(echo(payload)),
        )


def _say(message: str) -> None:
    print(f"bench: speed: {message}", file=sys.stderr, flush=True)
