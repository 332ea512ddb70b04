"""Trace context for a provider's outgoing calls, without a hard OpenTelemetry dependency."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

Inject = Callable[[MutableMapping[str, str]], None]


def trace_headers() -> dict[str, str]:
    """The W3C trace context headers (``traceparent``, ``tracestate``, ``baggage``) of
    the job being run, to send with a remote provider's HTTP or gRPC requests so the
    remote side's spans join the job's trace.

    Empty when ``opentelemetry-api`` is not installed or no trace is active (the
    server's telemetry is off). Call it from ``run`` (not from ``start``): the server
    runs each job's provider call inside that job's span.
    """
    inject = _injector()
    if inject is None:
        return {}
    headers: dict[str, str] = {}
    inject(headers)
    return headers


@functools.cache
def _injector() -> Inject | None:
    # Imported on first use: the propagators are configured from OTEL_PROPAGATORS then.
    try:
        from opentelemetry.propagate import inject
    except ImportError:
        return None
    return inject


class SpanHandle:
    """The few span operations the SDK uses; does nothing without OpenTelemetry."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, key: str, value: str | int | float | bool) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)


@contextlib.contextmanager
def client_span(name: str, attributes: Mapping[str, str | int]) -> Iterator[SpanHandle]:
    """A CLIENT span for one outgoing call, child of the job's span, when
    ``opentelemetry-api`` is installed (a no-op span when telemetry is off). Callers
    pass attributes already free of secrets."""
    tracer = _tracer()
    if tracer is None:
        yield SpanHandle()
        return
    from opentelemetry.trace import SpanKind

    with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield SpanHandle(span)


@functools.cache
def _tracer() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("retouch.sdk.http")
