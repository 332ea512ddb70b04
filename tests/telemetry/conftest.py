"""A real OTLP/gRPC receiver, and servers whose telemetry exports to it."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from retouch.sdk import EditRequest, Event, JobContext, trace_headers
from retouch.sdk.testing import FakeProvider
from retouch.server.app import RunningServer, running
from retouch.server.config import DEV_TENANT, ServerConfig
from retouch.server.policy import Plan, PlanBook
from retouch.server.telemetry import RpcScope, Telemetry, current_rpc
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import photo, png, square_mask

Servicer = Any  # the generated *_pb2_grpc modules carry no type information


class Receiver:
    """What an OpenTelemetry collector was sent, kept as the requests arrived."""

    def __init__(self) -> None:
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[Span]:
        return [
            span
            for request in self.traces
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def span(self, name: str) -> Span:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return sorted(s.name for s in self.spans())

    def resource_attributes(self) -> dict[str, object]:
        return attributes(self.traces[0].resource_spans[0].resource)

    def metric(self, name: str) -> Metric:
        """The last export of metric ``name`` (metrics are cumulative)."""
        found = [
            metric
            for request in self.metrics
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
        ]
        assert found, f"no metric {name!r} was exported"
        return found[-1]


def value(any_value: AnyValue) -> object:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def attributes(item: Any) -> dict[str, object]:
    """A span's, resource's or data point's attributes as a plain dict."""
    return {kv.key: value(kv.value) for kv in item.attributes}


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver.traces.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver

    async def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: object
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._receiver.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """An OTLP/gRPC collector on a free loopback port."""
    received = Receiver()
    server = aio.server()
    add_traces: Callable[[Servicer, aio.Server], None] = (
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server
    )
    add_metrics: Callable[[Servicer, aio.Server], None] = (
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server
    )
    add_traces(_Traces(received), server)
    add_metrics(_Metrics(received), server)
    received.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield received
    finally:
        await server.stop(None)


@pytest.fixture
def telemetry(receiver: Receiver) -> Telemetry:
    """Telemetry configured the way an operator would: through OTEL_* variables.

    Metrics go out only when flushed (the interval is longer than any test).
    """
    return Telemetry.from_environ(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "retouch-test",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        }
    )


class TracingProvider(FakeProvider):
    """A fake provider that records, for each job, what a remote provider would see:
    the trace context headers it would send, and the telemetry scope it runs in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers: list[dict[str, str]] = []
        self.scopes: list[RpcScope | None] = []

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        self.headers.append(trace_headers())
        self.scopes.append(current_rpc())
        async for event in super().run(request, context):
            yield event


@dataclasses.dataclass
class Served:
    """A running server and an ImageEdit stub connected to it."""

    server: RunningServer
    edit: image_edit_pb2_grpc.ImageEditAsyncStub


@pytest.fixture
def serve(
    tmp_path: Path,
) -> Callable[..., contextlib.AbstractAsyncContextManager[Served]]:
    """``async with serve(telemetry, providers=[...], plan=...) as s:`` — stopped (and
    its telemetry flushed and shut down) on exit."""

    @contextlib.asynccontextmanager
    async def start(
        telemetry: Telemetry, *, providers: Sequence[FakeProvider], plan: Plan | None = None
    ) -> AsyncIterator[Served]:
        from retouch.sdk import Health, HealthReport
        from retouch.server.registry import LoadedProvider, ProviderRegistry

        registry = ProviderRegistry()
        for fake in providers:
            await fake.start({})
            registry.add(LoadedProvider(fake, fake.manifest, HealthReport(Health.HEALTHY)))
        plan = plan or Plan("standard")
        config = ServerConfig(
            listen="127.0.0.1:0",
            data_dir=tmp_path / "data",
            environment="test",
            plans=PlanBook({plan.name: plan}),
            tenants=(dataclasses.replace(DEV_TENANT, default_plan=plan.name),),
            shutdown_grace_s=1.0,
        )
        async with (
            running(config, registry=registry, telemetry=telemetry) as server,
            aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            yield Served(server, image_edit_pb2_grpc.ImageEditStub(channel))

    return start


def inpaint_request(**fields: Any) -> pb.InpaintRequest:
    """An inpaint of the 256x256 sample photo with a square mask."""
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=png(photo())),
        mask=common_pb2.ImageInput(data=png(square_mask((256, 256), (96, 96, 160, 160)))),
        **fields,
    )
