"""The access log: one line per RPC, when it ends, on the ``retouch.access`` logger.

Each line names the method, the status it ended with, its duration, the tenant and
subject that called, the job it concerned (from the request's ``job_id``, or the first
event a job stream sent) and the trace id (the active span's, else the caller's W3C
``traceparent``). With ``RETOUCH_LOG_FORMAT=json`` the fields are top-level keys of the
JSON line; otherwise they read as ``key=value`` pairs, a value with a space, a quote, a
backslash or anything unprintable written as a JSON string (ASCII, escaped), so that a
caller's ``job_id`` can neither break the line nor forge another. ``access_log = false``
in the config turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio
from opentelemetry import trace

from ..auth import current_caller
from ..clock import Clock
from ..errors import RetouchError
from ._handlers import Handler, code_of, kind_of, replace_behaviour

ACCESS_LOGGER = "retouch.access"
log = logging.getLogger(ACCESS_LOGGER)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
_BARE = re.compile(r'[^ "\\]+')
"""What a printable value may hold and still be written as it is."""
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")


@dataclass
class AccessEntry:
    """The fields of one access line."""

    method: str
    status: str = "OK"
    duration_ms: float = 0.0
    tenant: str = ""
    subject: str = ""
    job_id: str = ""
    trace_id: str = ""
    peer: str = ""

    def fields(self) -> dict[str, object]:
        """The entry as the ``access`` extra of its log record."""
        return {
            "method": self.method,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "tenant": self.tenant,
            "subject": self.subject,
            "job_id": self.job_id,
            "trace_id": self.trace_id,
            "peer": self.peer,
        }

    def line(self) -> str:
        """The plain-text message: ``key=value`` pairs, empty ones left out."""
        return " ".join(f"{k}={_quoted(v)}" for k, v in self.fields().items() if v != "")


class AccessLogInterceptor(aio.ServerInterceptor):
    """Logs one :class:`AccessEntry` per RPC; goes after telemetry, before auth, so
    refused calls are logged too and the span's trace id is current."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        details: Any = handler_call_details
        metadata = dict(details.invocation_metadata or ())
        return self._logged(handler, str(details.method), _text(metadata.get("traceparent")))

    def _logged(self, handler: Handler, method: str, traceparent: str) -> Handler:
        kind = kind_of(handler)
        inner: Any = getattr(handler, kind)
        clock = self._clock

        def begin(request: Any, context: Any) -> tuple[AccessEntry, float]:
            entry = AccessEntry(method=method, job_id=_job_id(request))
            entry.trace_id = _trace_id(traceparent)
            with contextlib.suppress(Exception):
                entry.peer = str(context.peer())
            return entry, clock.monotonic()

        def end(
            entry: AccessEntry, started: float, context: Any, code: grpc.StatusCode | None
        ) -> None:
            entry.duration_ms = (clock.monotonic() - started) * 1000
            entry.status = (code or code_of(context)).name
            with contextlib.suppress(RetouchError):
                caller = current_caller()
                entry.tenant, entry.subject = caller.tenant, caller.subject
            log.info(entry.line(), extra={"access": entry.fields()})

        if kind.endswith("_unary"):

            async def respond(request: Any, context: Any) -> Any:
                entry, started = begin(request, context)
                code: grpc.StatusCode | None = None
                try:
                    return await inner(request, context)
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except aio.AbortError:
                    raise
                except Exception:
                    code = grpc.StatusCode.UNKNOWN
                    raise
                finally:
                    end(entry, started, context, code)

            return replace_behaviour(handler, kind, respond)

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            entry, started = begin(request, context)
            code: grpc.StatusCode | None = None
            try:
                produced = inner(request, context)
                if inspect.isawaitable(produced):
                    await produced
                else:
                    async for response in produced:
                        if not entry.job_id:
                            entry.job_id = str(getattr(response, "job_id", "") or "")
                        yield response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except aio.AbortError:
                raise
            except Exception:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                end(entry, started, context, code)

        return replace_behaviour(handler, kind, stream)


def _quoted(value: object) -> str:
    """``value`` as it is, or as a JSON string where it would not read as one plain
    value of one line."""
    text = str(value)
    if text.isprintable() and _BARE.fullmatch(text):
        return text
    return json.dumps(text)


def _job_id(request: Any) -> str:
    value = getattr(request, "job_id", "")
    # Over-long ids are refused by the handler; the log keeps a readable prefix.
    return value[:128] if isinstance(value, str) else ""


def _trace_id(traceparent: str) -> str:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x")
    parts = traceparent.split("-")
    if len(parts) == 4 and _TRACE_ID.fullmatch(parts[1]):
        return parts[1].lower()
    return ""


def _text(value: object) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


__all__ = ["ACCESS_LOGGER", "AccessEntry", "AccessLogInterceptor"]
