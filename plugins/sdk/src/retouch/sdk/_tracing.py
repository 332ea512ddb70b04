"""Trace context for a provider's outgoing calls, without a hard OpenTelemetry dependency."""

from __future__ import annotations

import functools
from collections.abc import Callable, MutableMapping

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
