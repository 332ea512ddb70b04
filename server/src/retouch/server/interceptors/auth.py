"""Authenticates every RPC but health and reflection, before any handler runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import grpc
from grpc import aio

from ..auth import AUTHORIZATION_HEADER, SUBJECT_HEADER, KeyRing, set_current_caller
from ..errors import RetouchError
from ._handlers import Handler, kind_of, replace_behaviour

PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


class AuthInterceptor(aio.ServerInterceptor):
    """Resolves the caller from metadata and refuses unauthenticated calls.

    Handlers read the caller with :func:`retouch.server.auth.current_caller`: grpc.aio
    runs interceptors and the handler in the one task it makes for each call, so the
    context variable set here is the handler's own (the tests run concurrent calls of
    different callers to hold that).
    """

    def __init__(self, keys: KeyRing, public_services: Collection[str] = PUBLIC_SERVICES) -> None:
        self._keys = keys
        self._public = frozenset(public_services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        details: Any = handler_call_details
        service = str(details.method).lstrip("/").rsplit("/", 1)[0]
        if handler is None or service in self._public:
            return handler
        metadata = tuple(details.invocation_metadata or ())
        try:
            caller = self._keys.authenticate(
                _values(metadata, AUTHORIZATION_HEADER), _values(metadata, SUBJECT_HEADER)
            )
        except RetouchError as error:
            return _refusing(handler, error)
        set_current_caller(caller)
        return handler


def _values(metadata: Sequence[tuple[str, object]], key: str) -> list[str]:
    """Every value sent under ``key``, in order: a caller may repeat a header, and the
    key ring refuses that rather than let one of them win."""
    return [_text(value) for name, value in metadata if name == key]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _refusing(handler: Handler, error: RetouchError) -> Handler:
    status = error.to_status()

    async def refuse(_request: Any, context: Any) -> None:
        await context.abort_with_status(status)

    return replace_behaviour(handler, kind_of(handler), refuse)
