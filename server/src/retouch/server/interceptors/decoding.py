"""Refuses request messages that do not parse with INVALID_ARGUMENT, on every RPC.

gRPC parses each request message before any handler runs, and reports a parse that
fails (bad UTF-8 in a string field, bytes that are not protobuf) as UNKNOWN, with a
traceback in the log and no access line. This interceptor wraps each handler's request
deserializer so that a message that does not parse comes out as an
:data:`UNDECODABLE` stand-in instead of an exception; the innermost wrapper of the
behaviour then ends the call with INVALID_ARGUMENT and a ``BadRequest`` naming the
``request`` field. The interceptors around it (telemetry, the access log, auth) see such
a call like any other refused one; an unauthenticated caller is still refused as such.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from ..errors import InvalidArgument
from ._handlers import Handler, kind_of, replace_behaviour

REQUEST_FIELD = "request"
"""The field a ``BadRequest`` names when a request message does not parse."""

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
Deserializer = Callable[[bytes], Any]


class Undecodable:
    """What a request message that does not parse deserializes to: :data:`UNDECODABLE`."""


UNDECODABLE = Undecodable()


class RequestDecodingInterceptor(aio.ServerInterceptor):
    """Turns request messages that do not parse into INVALID_ARGUMENT; goes last in the
    server's list, so that its check runs inside the access log and auth."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        deserializer: Deserializer | None = (
            None if handler is None else handler.request_deserializer
        )
        if handler is None or deserializer is None:
            return handler
        checked = _checked(handler, kind_of(handler), _message_name(deserializer))
        replaced: Handler = checked._replace(  # type: ignore[attr-defined]
            request_deserializer=_tolerant(deserializer)
        )
        return replaced


def _tolerant(deserializer: Deserializer) -> Deserializer:
    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError:
            return UNDECODABLE

    return deserialize


def _message_name(deserializer: Deserializer) -> str:
    # The stubs' deserializers are the message classes' FromString.
    message_type: Any = getattr(deserializer, "__self__", None)
    descriptor: Any = getattr(message_type, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "") or "protobuf")


async def _refuse(context: Any, message_name: str) -> None:
    description = f"the request is not a valid {message_name} message"
    await context.abort_with_status(InvalidArgument(REQUEST_FIELD, description).to_status())


def _checked(handler: Handler, kind: str, message_name: str) -> Handler:
    """``handler`` with its behaviour refusing an :data:`UNDECODABLE` request (for a
    request stream, on reaching the first such message)."""
    inner: Any = getattr(handler, kind)
    streamed_requests = kind.startswith("stream_")

    async def arrived(request: Any, context: Any) -> Any:
        if streamed_requests:
            return _parsed(request, context, message_name)
        if request is UNDECODABLE:
            await _refuse(context, message_name)
        return request

    # grpc.aio tells handlers apart by their function kind: a coroutine function for a
    # unary response, an async generator function for a response stream.
    if kind.endswith("_unary"):

        async def respond(request: Any, context: Any) -> Any:
            return await inner(await arrived(request, context), context)

        return replace_behaviour(handler, kind, respond)

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        produced = inner(await arrived(request, context), context)
        if inspect.isawaitable(produced):
            await produced  # a handler writing with context.write()
        else:
            async for response in produced:
                yield response

    return replace_behaviour(handler, kind, stream)


async def _parsed(
    requests: AsyncIterator[Any], context: Any, message_name: str
) -> AsyncIterator[Any]:
    async for request in requests:
        if request is UNDECODABLE:
            await _refuse(context, message_name)
        yield request


__all__ = ["REQUEST_FIELD", "UNDECODABLE", "RequestDecodingInterceptor", "Undecodable"]
