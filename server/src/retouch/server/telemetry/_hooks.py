"""The hooks the request path calls: spans and measurements that cost nothing when off.

Every hook first reads one module-level flag, ``_enabled``; while no enabled
:class:`~retouch.server.telemetry.Telemetry` exists it returns at once (or returns the
shared :data:`NOOP` scope), creating no object. When telemetry is on, the hooks find
the RPC they belong to in a context variable that the telemetry interceptor sets: the
job task inherits it from the RPC handler that created it, so a job's spans are
children of its RPC's span and its measurements go to that server's meters.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from retouch.sdk import (
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

from ..errors import RetouchError
from ._metrics import Instruments
from ._names import (
    BYTES,
    COST_CREDITS,
    ERROR_KIND,
    FORMAT,
    JOB_ID,
    MODEL,
    OPERATION,
    OUTCOME,
    PIXELS,
    PROVIDER,
    REASON,
    RPC_METHOD,
    STAGE,
    STATUS_CODE,
    SUBJECT,
    TENANT,
    TOTAL_STAGE,
    StageName,
)

if TYPE_CHECKING:
    from ..jobs.records import JobRecord


_enabled = False
"""Whether any enabled Telemetry exists in this process: the hooks' fast path."""
_instances = 0

SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Codes that mark a server span as an error (OpenTelemetry's gRPC conventions); the
others are the caller's to fix and leave the span's status unset."""

_PROVIDER_ERROR_KINDS: tuple[tuple[type[ProviderError], str], ...] = (
    (ProviderRateLimited, "rate_limited"),
    (ProviderTimeout, "timeout"),  # before its base class, ProviderUnavailable
    (ProviderUnavailable, "unavailable"),
    (ProviderRejected, "rejected"),
)


def _enable() -> None:
    global _enabled, _instances
    _instances += 1
    _enabled = True


def _disable() -> None:
    global _enabled, _instances
    _instances = max(0, _instances - 1)
    _enabled = _instances > 0


@dataclass(slots=True, eq=False)
class RpcScope:
    """What the hooks of one RPC (and the job it starts) record into."""

    tracer: Tracer | None
    instruments: Instruments
    method: str
    """The RPC's method name (``Inpaint``), which stage durations are labelled with."""
    span: Span | None
    """The RPC's server span, while tracing."""
    started: float
    """``time.perf_counter()`` when the call arrived."""
    outcome: str | None = None
    """Set by the job the call started, so the RPC span keeps the job's outcome."""

    def annotate(self, attributes: dict[str, AttributeValue]) -> None:
        """Set attributes on the RPC span, unless it has ended (its caller left early)."""
        span = self.span
        if span is not None and span.is_recording():
            span.set_attributes(attributes)


_current: contextvars.ContextVar[RpcScope] = contextvars.ContextVar("retouch_telemetry_rpc")


def current_rpc() -> RpcScope | None:
    """The telemetry scope of the RPC being handled, or None (telemetry off, no RPC)."""
    if not _enabled:
        return None
    return _current.get(None)


class Scope:
    """A timed step: a context manager (sync or async) around the work it measures.

    This base class does nothing; :data:`NOOP` is its one instance.
    """

    __slots__ = ()

    def __enter__(self) -> Scope:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    async def __aenter__(self) -> Scope:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set an attribute on the step's span (nothing when not tracing)."""


NOOP = Scope()
"""The scope every hook returns while telemetry is off."""


class _Stage(Scope):
    __slots__ = ("_attributes", "_name", "_rpc", "_span", "_started", "_token")

    def __init__(
        self, rpc: RpcScope, name: str, attributes: dict[str, AttributeValue] | None = None
    ) -> None:
        self._rpc = rpc
        self._name = name
        self._attributes = attributes
        self._span: Span | None = None
        self._token: contextvars.Token[Context] | None = None
        self._started = 0.0

    def __enter__(self) -> Scope:
        tracer = self._rpc.tracer
        if tracer is not None:
            self._span = tracer.start_span(f"retouch.{self._name}", attributes=self._attributes)
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._started
        attributes: dict[str, AttributeValue] = {STAGE: self._name, RPC_METHOD: self._rpc.method}
        if self._attributes and PROVIDER in self._attributes:
            attributes[PROVIDER] = self._attributes[PROVIDER]
        self._rpc.instruments.stage_duration.record(elapsed, attributes)
        if isinstance(error, Exception):
            self._failed(error)
        span = self._span
        if span is not None and self._token is not None:
            otel_context.detach(self._token)
            if isinstance(error, Exception):
                _mark_error(span, error)
            span.end()

    def _failed(self, error: Exception) -> None:
        return None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)


class _ProviderCall(_Stage):
    __slots__ = ()

    def _failed(self, error: Exception) -> None:
        assert self._attributes is not None
        self._rpc.instruments.provider_errors.add(
            1, {PROVIDER: self._attributes[PROVIDER], ERROR_KIND: provider_error_kind(error)}
        )


def stage(name: StageName) -> Scope:
    """A span ``retouch.<name>`` around a step of an edit, and its duration recorded in
    ``retouch.stage.duration``. ``with stage("validation"): ...``"""
    if not _enabled:
        return NOOP
    rpc = _current.get(None)
    if rpc is None:
        return NOOP
    return _Stage(rpc, name)


def provider_call(provider: str, model: str) -> Scope:
    """The ``retouch.provider`` step: one provider's attempt at a job. A failure counts
    in ``retouch.provider.errors``. Trace context headers a remote provider sends
    (:func:`retouch.sdk.trace_headers`) name this span as their parent."""
    if not _enabled:
        return NOOP
    rpc = _current.get(None)
    if rpc is None:
        return NOOP
    return _ProviderCall(rpc, "provider", {PROVIDER: provider, MODEL: model})


def job_started(record: JobRecord, width: int, height: int) -> None:
    """Name the job, its provider and its input's size on the RPC span."""
    if not _enabled:
        return
    rpc = _current.get(None)
    if rpc is None:
        return
    tenant, _, subject = record.owner.partition("/")
    rpc.annotate(
        {
            JOB_ID: record.job_id,
            OPERATION: record.operation,
            TENANT: tenant,
            SUBJECT: subject,
            PROVIDER: record.provider,
            MODEL: record.model,
            PIXELS: width * height,
        }
    )


def job_finished(record: JobRecord) -> None:
    """Count a job that reached ``record.state``, and time the edit from its RPC's start."""
    if not _enabled:
        return
    rpc = _current.get(None)
    if rpc is None:
        return
    outcome = record.state.value
    status = record.error_code or "OK"
    rpc.outcome = outcome
    rpc.instruments.jobs.add(
        1,
        {
            OPERATION: record.operation,
            PROVIDER: record.provider,
            OUTCOME: outcome,
            STATUS_CODE: status,
        },
    )
    rpc.instruments.stage_duration.record(
        time.perf_counter() - rpc.started,
        {STAGE: TOTAL_STAGE, RPC_METHOD: rpc.method, OPERATION: record.operation, OUTCOME: outcome},
    )
    rpc.annotate(
        {
            PROVIDER: record.provider,
            MODEL: record.model,
            COST_CREDITS: record.cost_credits,
            OUTCOME: outcome,
        }
    )


def stored_bytes(size: int, image_format: str) -> None:
    """Count a result's bytes written to the object store."""
    if not _enabled:
        return
    rpc = _current.get(None)
    if rpc is None:
        return
    rpc.instruments.stored_bytes.add(size, {FORMAT: image_format})
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({BYTES: size, FORMAT: image_format})


def provider_error_kind(error: BaseException) -> str:
    """``rate_limited``, ``unavailable``, ``timeout``, ``rejected``, ``error`` (another
    :class:`~retouch.sdk.ProviderError`) or ``unexpected`` (a bug in the provider)."""
    for kind, name in _PROVIDER_ERROR_KINDS:
        if isinstance(error, kind):
            return name
    return "error" if isinstance(error, ProviderError) else "unexpected"


def _mark_error(span: Span, error: Exception) -> None:
    if isinstance(error, RetouchError):
        code = error.code
        span.set_attribute(STATUS_CODE, code.name)
        reason = getattr(error, "reason", None)
        if isinstance(reason, str):
            span.set_attribute(REASON, reason)
        if code not in SERVER_FAULTS:
            return
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
