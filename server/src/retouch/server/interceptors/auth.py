"""Authenticates every RPC but health and reflection, before any handler runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc
from grpc import aio

from ..auth import SUBJECT_HEADER, KeyRing, set_current_caller
from ..errors import RetouchError

PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


class AuthInterceptor(aio.ServerInterceptor):
    """Resolves the caller from metadata and refuses unauthenticated calls.

    The caller is made available to handlers through :func:`retouch.server.auth.current_caller`;
    the handler is wrapped so the context variable is set in the task that runs it.
    """

    def __init__(self, keys: KeyRing, public_services: Collection[str] = PUBLIC_SERVICES) -> None:
        self._keys = keys
        self._public = frozenset(public_services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or method.lstrip("/").rsplit("/", 1)[0] in self._public:
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())  # type: ignore[attr-defined]
        try:
            caller = self._keys.authenticate(
                _text(metadata.get("authorization")), _text(metadata.get(SUBJECT_HEADER))
            )
        except RetouchError as error:
            return _refusing(handler, error)
        return _with_caller(handler, lambda: set_current_caller(caller))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _replace(handler: grpc.RpcMethodHandler, **behaviours: Any) -> grpc.RpcMethodHandler:
    return handler._replace(**behaviours)  # type: ignore[attr-defined,no-any-return]


def _with_caller(
    handler: grpc.RpcMethodHandler, bind: Callable[[], object]
) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            bind()
            return await inner_uu(request, context)

        return _replace(handler, unary_unary=unary_unary)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            bind()
            return await inner_su(requests, context)

        return _replace(handler, stream_unary=stream_unary)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            bind()
            async for response in inner_us(request, context):
                yield response

        return _replace(handler, unary_stream=unary_stream)
    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        bind()
        async for response in inner_ss(requests, context):
            yield response

    return _replace(handler, stream_stream=stream_stream)


def _refusing(handler: grpc.RpcMethodHandler, error: RetouchError) -> grpc.RpcMethodHandler:
    status = error.to_status()

    async def refuse(_request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        await context.abort_with_status(status)

    kind = next(
        name
        for name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        if getattr(handler, name)
    )
    return _replace(handler, **{kind: refuse})
