"""Spans of an edit, exported over OTLP/gRPC: the tree, its attributes, its trace context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
import pytest
from grpc import aio
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from retouch.sdk import Operation, ProviderUnavailable
from retouch.sdk.testing import FakeProvider
from retouch.server.telemetry import Telemetry
from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, photo, png, read_all
from tests.telemetry.conftest import Receiver, Served, TracingProvider, attributes, inpaint_request

Serve = Callable[..., AbstractAsyncContextManager[Served]]

INPAINT = "/retouch.v1.ImageEdit/Inpaint"
CHILDREN = [
    "retouch.policy.admit",
    "retouch.validation",
    "retouch.routing",
    "retouch.policy.tokens",
    "retouch.decode",
    "retouch.policy.reserve",
    "retouch.provider",
    "retouch.storage",
]
CLIENT_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CLIENT_SPAN_ID = 0x00F067AA0BA902B7


def traceparent(trace_id: int = CLIENT_TRACE_ID, span_id: int = CLIENT_SPAN_ID) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def hex_id(raw: bytes) -> str:
    return raw.hex()


async def test_an_inpaint_is_one_rpc_span_with_a_child_per_stage(
    serve: Serve, telemetry: Telemetry, receiver: Receiver
) -> None:
    fake = TracingProvider("fake", [Operation.INPAINT], steps=2)
    async with serve(telemetry, providers=[fake]) as served:
        events = await read_all(
            served.edit.Inpaint(inpaint_request(), metadata=metadata(subject="user:ada"))
        )
    assert events[-1].HasField("completed")

    rpc = receiver.span(INPAINT)
    assert rpc.kind == Span.SPAN_KIND_SERVER
    assert rpc.parent_span_id == b""
    children = [s for s in receiver.spans() if s.parent_span_id == rpc.span_id]
    assert [s.name for s in sorted(children, key=lambda s: s.start_time_unix_nano)] == CHILDREN
    assert all(s.trace_id == rpc.trace_id for s in children)

    job_id = events[0].job_id
    assert attributes(rpc) | {
        "retouch.tenant": "dev",
        "retouch.subject": "user:ada",
        "retouch.job_id": job_id,
        "retouch.operation": "inpaint",
        "retouch.provider": "fake",
        "retouch.model": "fake",
        "retouch.pixels": 256 * 256,
        "retouch.cost_credits": 0,
        "retouch.outcome": "succeeded",
        "retouch.status_code": "OK",
        "rpc.grpc.status_code": 0,
    } == attributes(rpc)
    assert rpc.status.code == Status.STATUS_CODE_UNSET

    provider = receiver.span("retouch.provider")
    assert attributes(provider) == {"retouch.provider": "fake", "retouch.model": "fake"}
    storage = attributes(receiver.span("retouch.storage"))
    assert storage["retouch.format"] == "PNG"
    assert storage["retouch.bytes"] == events[-1].completed.image.size_bytes

    resource = receiver.resource_attributes()
    assert resource["service.name"] == "retouch-test"
    assert resource["deployment.environment"] == "test"


async def test_the_callers_traceparent_is_the_parent_and_reaches_the_provider(
    serve: Serve, telemetry: Telemetry, receiver: Receiver
) -> None:
    fake = TracingProvider("fake", [Operation.INPAINT], steps=1)
    async with serve(telemetry, providers=[fake]) as served:
        await read_all(
            served.edit.Inpaint(
                inpaint_request(), metadata=(*metadata(), ("traceparent", traceparent()))
            )
        )

    rpc = receiver.span(INPAINT)
    assert hex_id(rpc.trace_id) == f"{CLIENT_TRACE_ID:032x}"
    assert hex_id(rpc.parent_span_id) == f"{CLIENT_SPAN_ID:016x}"
    provider = receiver.span("retouch.provider")
    assert provider.parent_span_id == rpc.span_id
    # What a remote provider would send on: the same trace, with its own span as parent.
    [headers] = fake.headers
    assert headers["traceparent"] == (
        f"00-{hex_id(provider.trace_id)}-{hex_id(provider.span_id)}-01"
    )


async def test_a_call_refused_by_auth_still_has_its_rpc_span(
    serve: Serve, telemetry: Telemetry, receiver: Receiver
) -> None:
    fake = TracingProvider("fake", [Operation.INPAINT])
    async with serve(telemetry, providers=[fake]) as served:
        with pytest.raises(aio.AioRpcError) as refused:
            await read_all(served.edit.Inpaint(inpaint_request()))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    rpc = receiver.span(INPAINT)
    assert attributes(rpc) | {
        "rpc.grpc.status_code": grpc.StatusCode.UNAUTHENTICATED.value[0],
        "retouch.status_code": "UNAUTHENTICATED",
        "retouch.reason": "MISSING_CREDENTIALS",
        "retouch.outcome": "refused",
    } == attributes(rpc)
    assert "retouch.tenant" not in attributes(rpc)
    # A caller's mistake is not the server's error.
    assert rpc.status.code == Status.STATUS_CODE_UNSET
    assert receiver.names() == [INPAINT]
    assert fake.calls == 0


async def test_a_provider_failure_marks_its_span_and_the_rpc(
    serve: Serve, telemetry: Telemetry, receiver: Receiver
) -> None:
    down = FakeProvider("down", [Operation.INPAINT], fail_with=ProviderUnavailable("no GPU"))
    async with serve(telemetry, providers=[down]) as served:
        with pytest.raises(aio.AioRpcError) as failed:
            await read_all(served.edit.Inpaint(inpaint_request(), metadata=metadata()))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE

    provider = receiver.span("retouch.provider")
    assert provider.status.code == Status.STATUS_CODE_ERROR
    assert [e.name for e in provider.events] == ["exception"]
    rpc = receiver.span(INPAINT)
    assert rpc.status.code == Status.STATUS_CODE_ERROR
    assert attributes(rpc)["retouch.outcome"] == "failed"
    assert attributes(rpc)["retouch.status_code"] == "UNAVAILABLE"
    assert "retouch.storage" not in receiver.names()


async def test_health_checks_are_not_traced(
    serve: Serve, telemetry: Telemetry, receiver: Receiver
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with (
        serve(telemetry, providers=[FakeProvider()]) as served,
        aio.insecure_channel(f"127.0.0.1:{served.server.port}") as channel,
    ):
        health: Any = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert receiver.names() == []


async def test_an_upload_then_an_edit_of_it_are_two_traced_calls(
    serve: Serve, telemetry: Telemetry, receiver: Receiver
) -> None:
    async def chunks(data: bytes) -> AsyncIterator[pb.UploadChunk]:
        for start in range(0, len(data), 32 * 1024):
            yield pb.UploadChunk(data=data[start : start + 32 * 1024], content_type="image/png")

    fake = TracingProvider("fake", [Operation.INPAINT], steps=1)
    async with serve(telemetry, providers=[fake]) as served:
        upload = await served.edit.Upload(chunks(png(photo())), metadata=metadata())
        request = inpaint_request()
        request.image.CopyFrom(common_pb2.ImageInput(upload_id=upload.upload_id))
        await read_all(served.edit.Inpaint(request, metadata=metadata()))

    uploaded = receiver.span("/retouch.v1.ImageEdit/Upload")
    assert attributes(uploaded)["retouch.status_code"] == "OK"
    assert attributes(uploaded)["retouch.outcome"] == "ok"
    assert attributes(uploaded)["retouch.tenant"] == "dev"
    assert attributes(receiver.span(INPAINT))["retouch.outcome"] == "succeeded"
