"""Request messages that do not parse get INVALID_ARGUMENT naming the request, on every
RPC, with an access line and no traceback (gRPC's own answer was UNKNOWN, traceback and all)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio

from retouch.server.app import RunningServer
from retouch.server.interceptors.access_log import ACCESS_LOGGER
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, rpc_details

BAD_UTF8 = b"\x0a\x02\xff\xfe"
"""Field 1 holding bytes that are not UTF-8: bad where field 1 is a string."""
NOT_PROTOBUF = b"\xff\xff\xff\xff\xff"
Metadata = tuple[tuple[str, str], ...]


def refused_as_unparsable(error: Any, message_type: str) -> None:
    """``error`` (a failed call, asyncio or blocking) is the refusal of a request that
    does not parse as a ``message_type``."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"the request is not a valid {message_type} message"
    bad_requests = [d for d in rpc_details(error) if isinstance(d, error_details_pb2.BadRequest)]
    assert [v.field for d in bad_requests for v in d.field_violations] == ["request"]


class AccessLines(logging.Handler):
    """The statuses of the access lines logged, to wait on: a line is written once the
    handler has cleaned up, which may be after the caller has its status."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[str] = []
        self._logged = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.statuses.append(record.__dict__["access"]["status"])
        self._logged.set()

    async def first(self, count: int) -> list[str]:
        """The first ``count`` statuses, once they are logged."""
        async with asyncio.timeout(10):  # a bound on a broken test, not a wait
            while len(self.statuses) < count:
                self._logged.clear()
                await self._logged.wait()
        return self.statuses[:count]


@pytest.fixture
def access() -> Iterator[AccessLines]:
    logger = logging.getLogger(ACCESS_LOGGER)
    lines, level = AccessLines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(lines)
    logger.setLevel(level)


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def unary(channel: aio.Channel, method: str, payload: bytes, meta: Metadata) -> None:
    call: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        method, request_serializer=None, response_deserializer=None
    )
    await call(payload, metadata=meta)


async def server_streaming(
    channel: aio.Channel, method: str, payload: bytes, meta: Metadata
) -> None:
    call: aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
        method, request_serializer=None, response_deserializer=None
    )
    async for _ in call(payload, metadata=meta):
        pass


@pytest.mark.parametrize(
    ("method", "message_type", "streams", "payload"),
    [
        ("/retouch.v1.ImageEdit/GetJob", "retouch.v1.GetJobRequest", False, BAD_UTF8),
        ("/retouch.v1.ImageEdit/GetJob", "retouch.v1.GetJobRequest", False, NOT_PROTOBUF),
        ("/retouch.v1.ImageEdit/Inpaint", "retouch.v1.InpaintRequest", True, BAD_UTF8),
        ("/retouch.v1.ImageEdit/Inpaint", "retouch.v1.InpaintRequest", True, NOT_PROTOBUF),
        ("/retouch.v1.Account/GetUsage", "retouch.v1.GetUsageRequest", False, BAD_UTF8),
        (
            "/retouch.v1.Providers/ListProviders",
            "retouch.v1.ListProvidersRequest",
            False,
            NOT_PROTOBUF,
        ),
    ],
)
async def test_an_unparsable_request_is_invalid_argument(
    channel: aio.Channel,
    caplog: pytest.LogCaptureFixture,
    access: AccessLines,
    method: str,
    message_type: str,
    streams: bool,
    payload: bytes,
) -> None:
    caplog.set_level(logging.INFO)
    send = server_streaming if streams else unary
    with pytest.raises(aio.AioRpcError) as error:
        await send(channel, method, payload, metadata())
    refused_as_unparsable(error.value, message_type)
    assert await access.first(1) == ["INVALID_ARGUMENT"]
    no_errors_logged(caplog)


@pytest.mark.parametrize("streams", [False, True])
async def test_an_unauthenticated_caller_is_refused_as_such_whatever_it_sends(
    channel: aio.Channel, caplog: pytest.LogCaptureFixture, access: AccessLines, streams: bool
) -> None:
    caplog.set_level(logging.INFO)
    method = "/retouch.v1.ImageEdit/" + ("Inpaint" if streams else "GetJob")
    send = server_streaming if streams else unary
    anonymous: list[Metadata] = [(), (("authorization", "Bearer wrong"),)]
    for meta in anonymous:
        with pytest.raises(aio.AioRpcError) as error:
            await send(channel, method, BAD_UTF8, meta)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await access.first(2) == ["UNAUTHENTICATED"] * 2
    no_errors_logged(caplog)


@pytest.mark.parametrize("meta", [(), metadata()], ids=["anonymous", "authenticated"])
async def test_the_public_health_check_refuses_an_unparsable_request(
    channel: aio.Channel, caplog: pytest.LogCaptureFixture, meta: Metadata
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(aio.AioRpcError) as error:
        await unary(channel, "/grpc.health.v1.Health/Check", BAD_UTF8, meta)
    refused_as_unparsable(error.value, "grpc.health.v1.HealthCheckRequest")
    no_errors_logged(caplog)


async def test_reflection_refuses_an_unparsable_message_of_its_stream(
    channel: aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    call: aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(aio.AioRpcError) as error:
        async for _ in call(iter([NOT_PROTOBUF])):
            pass
    # Both reflection services parse grpc.reflection.v1alpha's messages.
    refused_as_unparsable(error.value, "grpc.reflection.v1alpha.ServerReflectionRequest")
    no_errors_logged(caplog)


def upload(port: int, chunks: Sequence[bytes], meta: Metadata) -> grpc.RpcError:
    """The error an upload of raw ``chunks`` ends with, sent by gRPC's blocking client:
    the asyncio one answers "Failed execute_batch" to a write the server no longer
    reads, where the blocking one reports the server's status."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as blocking:
        call: grpc.StreamUnaryMultiCallable[bytes, bytes] = blocking.stream_unary(
            "/retouch.v1.ImageEdit/Upload"
        )
        with pytest.raises(grpc.RpcError) as error:
            call(iter(chunks), metadata=meta)
    return error.value


@pytest.mark.parametrize(
    ("meta", "code"),
    [
        (metadata(), grpc.StatusCode.INVALID_ARGUMENT),
        ((), grpc.StatusCode.UNAUTHENTICATED),
    ],
    ids=["authenticated", "anonymous"],
)
async def test_an_upload_refuses_an_unparsable_chunk(
    server: RunningServer,
    caplog: pytest.LogCaptureFixture,
    access: AccessLines,
    meta: Metadata,
    code: grpc.StatusCode,
) -> None:
    caplog.set_level(logging.INFO)
    good = pb.UploadChunk(content_type="image/png", data=b"\x89PNG").SerializeToString()
    error: Any = await asyncio.to_thread(upload, server.port, [good, BAD_UTF8, good], meta)
    assert error.code() == code
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        refused_as_unparsable(error, "retouch.v1.UploadChunk")
    assert await access.first(1) == [code.name]
    no_errors_logged(caplog)
