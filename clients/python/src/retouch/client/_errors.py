"""Failed calls as exceptions that carry the server's ``google.rpc`` details.

    RetouchError                 base: code, message, reason, metadata, field_violations,
    │                            quota_violations, retry_after, details
    ├── InvalidArgument          INVALID_ARGUMENT: a bad image, mask or parameter
    ├── Unauthenticated          UNAUTHENTICATED: no key, or a key the server does not know
    ├── PermissionDenied         PERMISSION_DENIED: the plan does not allow this
    ├── NotFound                 NOT_FOUND: missing, or someone else's
    ├── ResourceExhausted        RESOURCE_EXHAUSTED: rate limit, quota or credits
    ├── Unavailable              UNAVAILABLE: no provider now, or the server is unreachable
    ├── Cancelled                CANCELLED: the call or the job was cancelled
    ├── DeadlineExceeded         DEADLINE_EXCEEDED: the deadline passed first
    └── ServerError              INTERNAL, UNKNOWN and any other code

:func:`from_rpc_error` turns a ``grpc.RpcError`` into the matching subclass; the client
never lets a raw ``grpc.RpcError`` escape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"


class FieldViolation(NamedTuple):
    """One bad field of a request, from a ``google.rpc.BadRequest`` detail."""

    field: str
    description: str


class QuotaViolation(NamedTuple):
    """One limit that refused a request, from a ``google.rpc.QuotaFailure`` detail."""

    subject: str
    description: str


class RetouchError(Exception):
    """A call to the retouch service failed.

    Attributes are plain values read from the status and its details: ``reason``,
    ``domain`` and ``metadata`` from ``ErrorInfo``; ``field_violations`` from
    ``BadRequest``; ``quota_violations`` from ``QuotaFailure``; ``retry_after`` (seconds)
    from ``RetryInfo``. ``details`` holds every unpacked detail message.
    """

    code: grpc.StatusCode

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        quota_violations: Sequence[QuotaViolation] = (),
        retry_after: float | None = None,
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: list[FieldViolation] = list(field_violations)
        self.quota_violations: list[QuotaViolation] = list(quota_violations)
        self.retry_after = retry_after
        self.details: list[Message] = list(details)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r}, reason={self.reason!r})"


class InvalidArgument(RetouchError):
    """The request is malformed; ``field_violations`` names what to fix."""


class Unauthenticated(RetouchError):
    """The API key is missing or unknown; ``reason`` says which."""


class PermissionDenied(RetouchError):
    """The caller's plan or role does not allow this; ``reason`` and ``metadata`` say why."""


class NotFound(RetouchError):
    """The job, result or upload does not exist for this caller."""


class ResourceExhausted(RetouchError):
    """A rate limit, quota or credit balance refused the call.

    ``retry_after`` is set when waiting helps (a rate limit) and ``None`` when it does
    not before the quota period resets.
    """


class Unavailable(RetouchError):
    """No provider can take the job now, or the server could not be reached."""


class Cancelled(RetouchError):
    """The call or the job was cancelled."""


class DeadlineExceeded(RetouchError):
    """The call's deadline passed before it finished."""


class ServerError(RetouchError):
    """The server failed (INTERNAL, UNKNOWN, or a code the client does not expect)."""


_BY_CODE: dict[grpc.StatusCode, type[RetouchError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}

_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.QuotaFailure,
    error_details_pb2.RetryInfo,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.DebugInfo,
    error_details_pb2.RequestInfo,
)


def error_for(
    code: grpc.StatusCode, message: str, trailing_metadata: object = None
) -> RetouchError:
    """The exception for a status ``code`` and ``message``, with the details packed in
    ``trailing_metadata`` (as a ``grpc-status-details-bin`` entry) unpacked into it."""
    details = _unpack(_status_from_metadata(trailing_metadata))
    info: error_details_pb2.ErrorInfo | None = None
    retry_after: float | None = None
    violations: list[FieldViolation] = []
    quota: list[QuotaViolation] = []
    for detail in details:
        if isinstance(detail, error_details_pb2.ErrorInfo):
            info = detail
        elif isinstance(detail, error_details_pb2.BadRequest):
            violations += [FieldViolation(v.field, v.description) for v in detail.field_violations]
        elif isinstance(detail, error_details_pb2.QuotaFailure):
            quota += [QuotaViolation(v.subject, v.description) for v in detail.violations]
        elif isinstance(detail, error_details_pb2.RetryInfo):
            delay = detail.retry_delay
            retry_after = delay.seconds + delay.nanos / 1e9
    kind = _BY_CODE.get(code, ServerError)
    return kind(
        code,
        message,
        reason=info.reason if info else None,
        domain=info.domain if info else None,
        metadata=dict(info.metadata) if info else None,
        field_violations=violations,
        quota_violations=quota,
        retry_after=retry_after,
        details=details,
    )


def from_rpc_error(error: grpc.RpcError) -> RetouchError:
    """The :class:`RetouchError` for a failed gRPC call (sync or ``grpc.aio``)."""
    code = _call_value(error, "code")
    message = _call_value(error, "details")
    trailing = _call_value(error, "trailing_metadata")
    return error_for(
        code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
        message if isinstance(message, str) else "",
        trailing,
    )


def _call_value(error: grpc.RpcError, name: str) -> object:
    method = getattr(error, name, None)
    return method() if callable(method) else None


def _status_from_metadata(trailing_metadata: object) -> status_pb2.Status | None:
    if not trailing_metadata:
        return None
    for key, value in trailing_metadata:  # type: ignore[attr-defined]
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a garbled detail must not hide the status itself
                return None
    return None


def _unpack(status: status_pb2.Status | None) -> list[Message]:
    if status is None:
        return []
    unpacked: list[Message] = []
    for packed in status.details:
        for kind in _DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                unpacked.append(message)
                break
    return unpacked
