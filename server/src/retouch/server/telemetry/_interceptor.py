"""The telemetry interceptor: OpenTelemetry's gRPC server span, and what retouch adds.

It goes first in the server's interceptor list, so an RPC that the auth interceptor
refuses still has its span. Inside OpenTelemetry's own ``aio_server_interceptor`` (which
extracts the caller's W3C ``traceparent`` from metadata and opens the server span), the
handler is wrapped once more to:

- open the :class:`~._hooks.RpcScope` the hooks of this call and its job record into;
- set the status the call really ended with on the span (``abort_with_status``, which
  every retouch error goes through, bypasses the instrumentation's context wrapper, so
  its span would otherwise say OK), with the caller and the ``google.rpc.ErrorInfo``
  reason;
- count refusals: calls that ended with a caller-side status before sending anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ..auth import current_caller
from ..errors import RetouchError
from ..interceptors._handlers import Handler, code_of, kind_of, replace_behaviour
from ._hooks import SERVER_FAULTS, RpcScope, _current
from ._names import (
    CLIENT_ADDRESS,
    CLIENT_PORT,
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    NETWORK_TYPE,
    OUTCOME,
    REASON,
    RPC_GRPC_STATUS_CODE,
    RPC_METHOD,
    RPC_RESPONSE_STATUS_CODE,
    RPC_SYSTEM_NAME,
    STATUS_CODE,
    SUBJECT,
    TENANT,
)

if TYPE_CHECKING:
    from ._telemetry import Telemetry

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["Handler | None"]]

_NOT_REFUSALS = SERVER_FAULTS | {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED}
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class TelemetryInterceptor(aio.ServerInterceptor):
    """Traces and measures every RPC but those of the excluded services."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._excluded = telemetry.settings.excluded_services
        self._tracing: aio.ServerInterceptor | None = None
        if telemetry.tracer_provider is not None:
            from opentelemetry.instrumentation.grpc import aio_server_interceptor

            self._tracing = aio_server_interceptor(  # type: ignore[no-untyped-call]
                tracer_provider=telemetry.tracer_provider
            )

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        details: Any = handler_call_details
        method = str(details.method)
        if method.lstrip("/").rsplit("/", 1)[0] in self._excluded:
            return await continuation(handler_call_details)

        async def observed(call_details: grpc.HandlerCallDetails) -> Handler | None:
            handler = await continuation(call_details)
            return None if handler is None else self._observe(handler, method)

        if self._tracing is None:
            return await observed(handler_call_details)
        return await self._tracing.intercept_service(observed, handler_call_details)

    def _observe(self, handler: Handler, method: str) -> Handler:
        kind = kind_of(handler)
        inner: Any = getattr(handler, kind)
        telemetry = self._telemetry
        short_method = method.rsplit("/", 1)[-1]
        full_method = method.lstrip("/")

        if kind.endswith("_unary"):

            async def respond(request: Any, context: Any) -> Any:
                rpc = _open(telemetry, short_method)
                token = _current.set(rpc)
                code: grpc.StatusCode | None = None
                responded = False
                try:
                    response = await inner(request, context)
                    responded = True
                    return response
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except aio.AbortError:
                    # The status is sent by now, and grpc.aio raises the abort again
                    # once the handler returns; letting it through here would have the
                    # instrumentation record it, traceback and all, on every refusal.
                    return None
                except Exception:
                    code = grpc.StatusCode.UNKNOWN
                    raise
                finally:
                    _close(rpc, token, context, short_method, code, responded, full_method)

            return replace_behaviour(handler, kind, respond)

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            rpc = _open(telemetry, short_method)
            token = _current.set(rpc)
            code: grpc.StatusCode | None = None
            responded = False
            try:
                produced = inner(request, context)
                if inspect.isawaitable(produced):
                    # A streaming handler may also be a coroutine that writes with
                    # context.write(); the auth interceptor's refusal is one.
                    await produced
                else:
                    async for response in produced:
                        responded = True
                        yield response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except aio.AbortError:
                return  # as in respond() above
            except Exception:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                _close(rpc, token, context, short_method, code, responded, full_method)

        return replace_behaviour(handler, kind, stream)


def _open(telemetry: Telemetry, method: str) -> RpcScope:
    span = trace.get_current_span() if telemetry.tracer is not None else None
    return RpcScope(
        tracer=telemetry.tracer,
        instruments=telemetry.instruments,
        method=method,
        span=span if span is not None and span.is_recording() else None,
        started=time.perf_counter(),
    )


def _close(
    rpc: RpcScope,
    token: Any,
    context: Any,
    method: str,
    code: grpc.StatusCode | None,
    responded: bool,
    full_method: str,
) -> None:
    # A generator closed from another task (at garbage collection) cannot reset.
    with contextlib.suppress(ValueError):
        _current.reset(token)
    if code is None:
        code = code_of(context)
    reason = _reason(context) if code is not grpc.StatusCode.OK else None
    refused = not responded and code not in _NOT_REFUSALS
    if refused:
        rpc.instruments.refusals.add(
            1, {RPC_METHOD: method, STATUS_CODE: code.name, REASON: reason or code.name}
        )
    conventions: dict[str, AttributeValue] = {
        RPC_SYSTEM_NAME: "grpc",
        RPC_METHOD: full_method,
        RPC_RESPONSE_STATUS_CODE: code.name,
    }
    rpc.instruments.call_duration.record(time.perf_counter() - rpc.started, conventions)
    span = rpc.span
    if span is None or not span.is_recording():
        return
    attributes: dict[str, AttributeValue] = {
        **conventions,
        **_peer(context),
        RPC_GRPC_STATUS_CODE: code.value[0],
        STATUS_CODE: code.name,
    }
    if reason:
        attributes[REASON] = reason
    if rpc.outcome is None:
        attributes[OUTCOME] = _outcome(code, refused)
    # The auth interceptor sets the caller in this task, inside the handler we wrap.
    with contextlib.suppress(RetouchError):
        caller = current_caller()
        attributes[TENANT] = caller.tenant
        attributes[SUBJECT] = caller.subject
    span.set_attributes(attributes)
    if code in SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {_text(context.details())}"))


def _peer(context: Any) -> dict[str, AttributeValue]:
    """``network.peer.*`` and ``client.*`` from gRPC's ``ipv4:1.2.3.4:5678`` peer."""
    try:
        peer = str(context.peer())
    except Exception:  # a context without a transport (in-process tests)
        return {}
    scheme, _, rest = peer.partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return {}
    host, _, port = rest.rpartition(":")
    host = urllib.parse.unquote(host).strip("[]")
    attributes: dict[str, AttributeValue] = {
        NETWORK_PEER_ADDRESS: host,
        CLIENT_ADDRESS: host,
        NETWORK_TYPE: scheme,
    }
    if port.isdigit():
        attributes[NETWORK_PEER_PORT] = int(port)
        attributes[CLIENT_PORT] = int(port)
    return attributes


def _outcome(code: grpc.StatusCode, refused: bool) -> str:
    if refused:
        return "refused"
    if code is grpc.StatusCode.OK:
        return "ok"
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
        return "cancelled"
    return "error"


def _reason(context: Any) -> str | None:
    """The ``ErrorInfo`` reason in the status details the call ended with, if any."""
    for key, value in context.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason) or None
    return None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)
