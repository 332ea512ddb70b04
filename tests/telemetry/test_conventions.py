"""The stable RPC semantic conventions on spans and the ``rpc.server.call.duration``
histogram; OTLP over http/protobuf to a local receiver; a bounded shutdown."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import grpc
import pytest
from aiohttp import web
from grpc import aio
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from retouch.sdk import Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.telemetry import Telemetry
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, read_all
from tests.telemetry.conftest import Receiver, Served, attributes, inpaint_request

Serve = Callable[..., AbstractAsyncContextManager[Served]]

INPAINT = "retouch.v1.ImageEdit/Inpaint"
GET_JOB = "retouch.v1.ImageEdit/GetJob"


async def test_spans_and_the_duration_metric_follow_the_rpc_conventions(
    serve: Serve, telemetry: Telemetry, receiver: Receiver
) -> None:
    fake = FakeProvider("fake", [Operation.INPAINT], steps=1)
    async with serve(telemetry, providers=[fake]) as served:
        await read_all(served.edit.Inpaint(inpaint_request(), metadata=metadata()))
        with pytest.raises(aio.AioRpcError) as missing:
            await served.edit.GetJob(pb.GetJobRequest(job_id="job_nope"), metadata=metadata())
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # Stopping the server flushed both signals.

    by_method = {attributes(s).get("rpc.method"): attributes(s) for s in receiver.spans()}
    inpaint = by_method[INPAINT]
    assert inpaint["rpc.system.name"] == "grpc"
    assert inpaint["rpc.response.status_code"] == "OK"
    assert inpaint["network.peer.address"] == "127.0.0.1"
    assert inpaint["client.address"] == "127.0.0.1"
    assert isinstance(inpaint["network.peer.port"], int)
    assert by_method[GET_JOB]["rpc.response.status_code"] == "NOT_FOUND"

    duration = receiver.metric("rpc.server.call.duration")
    assert duration.unit == "s"
    points = {
        (attributes(p)["rpc.method"], attributes(p)["rpc.response.status_code"]): p
        for p in duration.histogram.data_points
    }
    assert set(points) == {(INPAINT, "OK"), (GET_JOB, "NOT_FOUND")}
    for point in points.values():
        assert attributes(point)["rpc.system.name"] == "grpc"
        assert point.count == 1
        assert point.sum > 0


class HttpReceiver:
    """An OTLP/HTTP collector (protobuf bodies) on aiohttp."""

    def __init__(self) -> None:
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.content_types: set[str] = set()

    async def on_traces(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        body = await request.read()
        self.traces.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    async def on_metrics(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.metrics.append(metrics_service_pb2.ExportMetricsServiceRequest.FromString(body))
        reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")


@pytest.fixture
async def http_receiver() -> AsyncIterator[tuple[HttpReceiver, str]]:
    receiver = HttpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.on_traces)
    app.router.add_post("/v1/metrics", receiver.on_metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_http_protobuf_export_reaches_a_local_receiver(
    serve: Serve,
    http_receiver: tuple[HttpReceiver, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver, endpoint = http_receiver
    # The http/protobuf exporters read the standard variables themselves.
    for name, value in {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",
    }.items():
        monkeypatch.setenv(name, value)
    telemetry = Telemetry.from_environ()
    assert telemetry.settings.traces_protocol == "http/protobuf"
    fake = FakeProvider("fake", [Operation.INPAINT], steps=1)
    async with serve(telemetry, providers=[fake]) as served:
        await read_all(served.edit.Inpaint(inpaint_request(), metadata=metadata()))
    spans = [
        span
        for request in receiver.traces
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert INPAINT in {attributes(s).get("rpc.method") for s in spans}
    assert receiver.content_types == {"application/x-protobuf"}
    names = {
        metric.name
        for request in receiver.metrics
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert "rpc.server.call.duration" in names


def test_an_unknown_protocol_is_refused() -> None:
    from retouch.server.telemetry import TelemetryError

    with pytest.raises(TelemetryError, match="grpc or http/protobuf"):
        Telemetry.from_environ(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
        )


def test_shutdown_gives_up_on_an_unreachable_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    # A collector that takes the connection and never answers: every export hangs until
    # its own timeout (5 s), far past shutdown's deadline, whatever the machine's load.
    # (A refused port is no good here: the exporter can give up at once and shutdown
    # then returns in time.)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        telemetry = Telemetry.from_environ(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_METRIC_EXPORT_INTERVAL": "600000",
            }
        )
        assert telemetry.tracer is not None
        telemetry.tracer.start_span("pending").end()
        # The exporters wait on the silent collector; shutdown returns at its deadline,
        # saying it gave up.
        assert telemetry.shutdown(timeout_s=0.2) is False
        assert telemetry.shutdown() is True  # already stopped
