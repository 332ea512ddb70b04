"""Telemetry bench: what tracing and metrics cost per job, on and off.

Two servers run side by side in this process on the same providers and data: one with
telemetry off (the default), one exporting spans and metrics over OTLP/gRPC to a sink
on loopback. Calls alternate between them so both see the same machine load. The off
path's own cost is also timed hook by hook, since a difference of microseconds is below
what end-to-end latency can resolve.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from grpc import aio
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from retouch.server.app import running
from retouch.server.config import DEV_API_KEY, DEV_TENANT, ServerConfig
from retouch.server.policy import Plan, PlanBook
from retouch.server.telemetry import Telemetry, stage
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb

from .stats import Summary

JOBS = 120
HOOK_CALLS = 200_000
HOOKS_PER_JOB = 9


@dataclass(frozen=True, slots=True)
class TelemetryFigures:
    """Per-job latency with telemetry off and on, and the off path's hook cost."""

    off: Summary
    on: Summary
    hook_ns: float
    spans_exported: int


class _Sink(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """An OTLP collector that counts what it is sent and keeps nothing."""

    def __init__(self) -> None:
        self.spans = 0

    async def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self.spans += sum(
                len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
            )
            return trace_service_pb2.ExportTraceServiceResponse()
        return metrics_service_pb2.ExportMetricsServiceResponse()


@asynccontextmanager
async def _sink() -> AsyncIterator[tuple[_Sink, int]]:
    sink = _Sink()
    server = aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield sink, port
    finally:
        await server.stop(None)


def _request() -> pb.InpaintRequest:
    image = np.full((64, 64, 3), 90, np.uint8)
    image[::4] = 200
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 255
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=cv2.imencode(".png", image)[1].tobytes()),
        mask=common_pb2.ImageInput(data=cv2.imencode(".png", mask)[1].tobytes()),
        output=common_pb2.OutputOptions(inline=True),
        provider=common_pb2.ProviderChoice(provider="opencv"),
    )


def _config(data_dir: Path) -> ServerConfig:
    plan = Plan("bench", rate_per_s=1e6, burst=10**6)
    tenant = dataclasses.replace(DEV_TENANT, default_plan=plan.name, rate_per_s=1e6, burst=10**6)
    return ServerConfig(
        listen="127.0.0.1:0",
        data_dir=data_dir,
        plans=PlanBook({plan.name: plan}),
        tenants=(tenant,),
    )


def _hook_cost_ns() -> float:
    """Nanoseconds per ``with stage(...)`` while telemetry is off."""
    started = time.perf_counter_ns()
    for _ in range(HOOK_CALLS):
        with stage("validation"):
            pass
    return (time.perf_counter_ns() - started) / HOOK_CALLS


async def run_telemetry_bench() -> TelemetryFigures:
    """Alternate jobs between a server with telemetry off and one with it on."""
    hook_ns = _hook_cost_ns()
    request = _request()
    metadata = (("authorization", f"Bearer {DEV_API_KEY}"),)
    samples: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="retouch-telemetry-bench-") as tmp:
        async with _sink() as (sink, sink_port):
            on = Telemetry.from_environ(
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                    "OTEL_SERVICE_NAME": "retouch-bench",
                }
            )
            configs = {enabled: _config(Path(tmp) / str(enabled)) for enabled in (False, True)}
            async with (
                running(configs[False], telemetry=Telemetry.disabled()) as server_off,
                running(configs[True], telemetry=on) as server_on,
                aio.insecure_channel(f"127.0.0.1:{server_off.port}") as channel_off,
                aio.insecure_channel(f"127.0.0.1:{server_on.port}") as channel_on,
            ):
                stubs: dict[bool, Any] = {
                    False: image_edit_pb2_grpc.ImageEditStub(channel_off),
                    True: image_edit_pb2_grpc.ImageEditStub(channel_on),
                }
                for index in range(JOBS + 10):
                    for enabled in (index % 2 == 0, index % 2 == 1):
                        started = time.perf_counter()
                        async for _ in stubs[enabled].Inpaint(request, metadata=metadata):
                            pass
                        if index >= 10:
                            samples[enabled].append((time.perf_counter() - started) * 1000)
            spans = sink.spans
    return TelemetryFigures(
        off=Summary.of(samples[False]),
        on=Summary.of(samples[True]),
        hook_ns=hook_ns,
        spans_exported=spans,
    )


def render_telemetry(figures: TelemetryFigures) -> str:
    """The telemetry section of RESULTS.md."""
    overhead = figures.on.p50 - figures.off.p50
    off_cost_us = figures.hook_ns * HOOKS_PER_JOB / 1000
    return "\n".join(
        [
            "## Telemetry (OpenTelemetry tracing and metrics)",
            "",
            f"{JOBS} 64x64 inpaint jobs (opencv, inline result) alternating between two "
            "servers in one process: telemetry off (the default) and on, exporting spans "
            "and metrics over OTLP/gRPC to a sink on loopback "
            f"({figures.spans_exported} spans received).",
            "",
            "| run | p50 / p90 / mean (ms) |",
            "|---|---|",
            f"| telemetry off | {figures.off.text()} |",
            f"| telemetry on | {figures.on.text()} |",
            "",
            f"- With telemetry on, a job costs {overhead:+.2f} ms at p50.",
            f"- With it off, each hook costs {figures.hook_ns:.0f} ns "
            f"(`with stage(...)`, timed {HOOK_CALLS} times); a job passes about "
            f"{HOOKS_PER_JOB} hooks, about {off_cost_us:.1f} µs — below what the "
            "end-to-end figures can resolve, so telemetry off has no measurable overhead.",
            "",
        ]
    )


if __name__ == "__main__":
    print(render_telemetry(asyncio.run(run_telemetry_bench())))
