"""Errors at the RPC edge: our errors become their status; anything else INTERNAL."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from grpc import aio

from ..errors import Internal, RetouchError
from ..request_checks import check_request

log = logging.getLogger("retouch.server.rpc")

F = TypeVar("F", bound=Callable[..., Any])

_UNEXPECTED = Internal(
    "the server failed to handle this call; it has been logged", reason="UNEXPECTED_ERROR"
)


def rpc(method: F) -> F:
    """Wrap a servicer method: see :func:`_wrap`; the request is checked first."""
    return _wrap(method, check=True)


def edit_rpc(method: F) -> F:
    """Like :func:`rpc` for the edit methods, whose preparer runs the request checks
    itself so that every bad field is reported at once."""
    return _wrap(method, check=False)


def _wrap(method: F, *, check: bool) -> F:
    """Wrap a servicer method (coroutine or async generator) so that a
    :class:`RetouchError` ends the call with its status and details, and an unexpected
    exception ends it with a stable INTERNAL status after being logged. The request is
    checked first (:func:`~retouch.server.request_checks.check_request`)."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(
            self: Any, request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                if check:
                    check_request(request)
                async for response in method(self, request, context):
                    yield response
            except RetouchError as error:
                await _end(context, error.to_status())
            except (asyncio.CancelledError, aio.AbortError):
                raise
            except Exception:
                log.exception("unexpected error in %s", method.__qualname__)
                await _end(context, _UNEXPECTED.to_status())

        return cast(F, stream)

    call = cast(Callable[..., Awaitable[Any]], method)

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        try:
            if check:
                check_request(request)
            return await call(self, request, context)
        except RetouchError as error:
            await _end(context, error.to_status())
        except (asyncio.CancelledError, aio.AbortError):
            raise
        except Exception:
            log.exception("unexpected error in %s", method.__qualname__)
            await _end(context, _UNEXPECTED.to_status())

    return cast(F, unary)


async def _end(context: aio.ServicerContext[Any, Any], status: grpc.Status) -> None:
    """End the call with ``status``, unless it has already ended (cancelled by the
    caller or by a stopping server, or aborted): gRPC refuses a second abort with an
    error of its own, and the caller has its status already."""
    if context.done():
        return
    await context.abort_with_status(status)
