"""Tracing, metrics and trace-aware logs for the retouch server, on OpenTelemetry.

Off by default, and then free: no interceptor is installed and every hook returns after
one flag check. The standard ``OTEL_*`` variables turn it on (see
:class:`TelemetrySettings`); spans and metrics then go out over OTLP/gRPC.

The request path calls the hooks: :func:`stage` and :func:`provider_call` time and trace
a step, :func:`job_started`, :func:`job_finished` and :func:`stored_bytes` record what a
job did. ``start_server`` builds a :class:`Telemetry` and puts its interceptor first.
"""

from ._hooks import (
    NOOP,
    RpcScope,
    Scope,
    current_rpc,
    job_finished,
    job_started,
    provider_call,
    provider_error_kind,
    stage,
    stored_bytes,
)
from ._logging import (
    JsonFormatter,
    PlainFormatter,
    TraceContextFilter,
    configure_logging,
    log_format,
)
from ._names import StageName
from ._settings import TelemetryError, TelemetrySettings
from ._telemetry import Telemetry

__all__ = [
    "NOOP",
    "JsonFormatter",
    "PlainFormatter",
    "RpcScope",
    "Scope",
    "StageName",
    "Telemetry",
    "TelemetryError",
    "TelemetrySettings",
    "TraceContextFilter",
    "configure_logging",
    "current_rpc",
    "job_finished",
    "job_started",
    "log_format",
    "provider_call",
    "provider_error_kind",
    "stage",
    "stored_bytes",
]
