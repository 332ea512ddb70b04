"""The server's errors, each knowing its gRPC status code and ``google.rpc`` details.

    RetouchError                 base: ``code``, ``message``, ``to_status()``
    ├── InvalidArgument          INVALID_ARGUMENT + BadRequest (field violations)
    ├── Unauthenticated          UNAUTHENTICATED + ErrorInfo
    ├── PermissionDenied         PERMISSION_DENIED + ErrorInfo (reason, limit)
    ├── ResourceExhausted        RESOURCE_EXHAUSTED + QuotaFailure (+ RetryInfo)
    ├── NotFound                 NOT_FOUND (never says whether the thing exists)
    ├── FailedPrecondition       FAILED_PRECONDITION + ErrorInfo
    ├── Unavailable              UNAVAILABLE + RetryInfo
    ├── Cancelled                CANCELLED
    ├── DeadlineExceeded         DEADLINE_EXCEEDED
    └── Internal                 INTERNAL + ErrorInfo with a stable reason (never a traceback)

``to_status`` turns any of them into the ``grpc.Status`` that ``abort_with_status``
sends; ``from_exception`` maps anything else to INTERNAL. Every status it builds stays
under :data:`MAX_STATUS_BYTES`: messages and detail strings echo caller input, and a
status that outgrows the trailers reaches the caller as RESOURCE_EXHAUSTED instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import grpc
from google.protobuf import duration_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "retouch.v1"

MAX_STATUS_BYTES = 4096
"""The most a serialized ``google.rpc.Status`` may take. It travels twice in the
trailers (message percent-encoded, details base64), whose default limit is 8 KiB."""
MAX_MESSAGE_CHARS = 1024
MAX_DETAIL_CHARS = 256
"""Longest string kept in a detail (a field description, a metadata value)."""
_ELLIPSIS = "…"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + _ELLIPSIS


def echo(value: str, limit: int = 64) -> str:
    """``value`` quoted for a message, cut to ``limit`` characters: what callers sent
    is shown, never whole."""
    return repr(shorten(value, limit))


class RetouchError(Exception):
    """Base of the server's errors."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> Sequence[object]:
        """The ``google.rpc`` detail messages to attach."""
        return ()

    def to_status(self) -> grpc.Status:
        """This error as a ``grpc.Status`` with its details packed in."""
        return to_status(self.code, self.message, self.details())

    def to_status_proto(self) -> status_pb2.Status:
        """This error as a ``google.rpc.Status``."""
        return _status_proto(self.code, self.message, self.details())


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request."""

    field: str
    description: str


class InvalidArgument(RetouchError):
    """The request is malformed: a bad image, mask or parameter."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.violations: tuple[FieldViolation, ...] = (FieldViolation(field, description),)

    @classmethod
    def of(cls, violations: Sequence[FieldViolation]) -> InvalidArgument:
        """One error for several bad fields."""
        first = violations[0]
        error = cls(first.field, "; ".join(v.description for v in violations))
        error.violations = tuple(violations)
        return error

    @classmethod
    def on(cls, fields: Sequence[str], description: str) -> InvalidArgument:
        """One reason that several fields share, such as the padding sides that
        together make an outpaint too large."""
        error = cls(fields[0], description)
        error.violations = tuple(FieldViolation(field, description) for field in fields)
        return error

    @property
    def field(self) -> str:
        return self.violations[0].field

    def details(self) -> Sequence[object]:
        return (
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            ),
        )


class _WithErrorInfo(RetouchError):
    def __init__(
        self, message: str, *, reason: str, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = dict(metadata or {})

    def details(self) -> Sequence[object]:
        return (
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
            ),
        )


class Unauthenticated(_WithErrorInfo):
    """No credentials, or credentials that match no key."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(_WithErrorInfo):
    """The caller is known but not allowed this (plan limits, admin-only calls)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(_WithErrorInfo):
    """The request is valid but the system is not in a state to serve it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Internal(_WithErrorInfo):
    """Our fault. ``reason`` is stable; the message never carries a traceback."""

    code = grpc.StatusCode.INTERNAL


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """Which limit refused the request (``subject`` names the bucket or quota)."""

    subject: str
    description: str


class ResourceExhausted(RetouchError):
    """A rate limit, quota or credit balance refused the request."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[QuotaViolation],
        retry_after: float | None = None,
        reason: str = "RESOURCE_EXHAUSTED",
    ) -> None:
        super().__init__(message)
        self.violations = tuple(violations)
        self.retry_after = retry_after
        self.reason = reason

    def details(self) -> Sequence[object]:
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=v.subject, description=v.description
                )
                for v in self.violations
            ]
        )
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN)
        if self.retry_after is None:
            return (quota, info)
        return (quota, info, retry_info(self.retry_after))


class NotFound(RetouchError):
    """Missing, or someone else's: callers cannot tell which."""

    code = grpc.StatusCode.NOT_FOUND


class Unavailable(RetouchError):
    """No provider (or engine) can take the job now; retry after ``retry_after``
    seconds. With a ``reason``, an ErrorInfo names what was unavailable."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, *, retry_after: float = 1.0, reason: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason

    def details(self) -> Sequence[object]:
        if not self.reason:
            return (retry_info(self.retry_after),)
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN)
        return (info, retry_info(self.retry_after))


class Cancelled(RetouchError):
    """The job was cancelled."""

    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(RetouchError):
    """The caller's deadline passed before the job finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    """A RetryInfo detail saying "retry after ``seconds``" (rounded up to the ms)."""
    millis = max(0, math.ceil(seconds * 1000))
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=millis // 1000, nanos=(millis % 1000) * 1_000_000)
    )


def _status_proto(
    code: grpc.StatusCode, message: str, details: Sequence[object]
) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=shorten(message, MAX_MESSAGE_CHARS))
    for detail in details:
        bounded = _bounded(cast(Message, detail))
        # Room left for this detail, less a little for its Any wrapper.
        room = MAX_STATUS_BYTES - status.ByteSize() - 128
        if not _fit(bounded, room):
            # Keep the details that fit: the first is the one that names the problem.
            break
        status.details.add().Pack(bounded)
    return status


def _fit(detail: Message, room: int) -> bool:
    """Drop trailing items of ``detail``'s repeated fields (field violations, quota
    violations) until it takes at most ``room`` bytes; False if it cannot."""
    while detail.ByteSize() > room:
        lists = [
            getattr(detail, d.name)
            for d, _ in detail.ListFields()
            if d.is_repeated and not _is_map(d) and len(getattr(detail, d.name)) > 1
        ]
        if not lists:
            return False
        del lists[0][-1]
    return True


def _bounded(detail: Message) -> Message:
    """A copy of ``detail`` with every string field cut to :data:`MAX_DETAIL_CHARS`."""
    copy = type(detail)()
    copy.CopyFrom(detail)
    _shorten_strings(copy)
    return copy


def _is_map(descriptor: FieldDescriptor) -> bool:
    return descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry


def _shorten_strings(message: Message) -> None:
    for descriptor, value in message.ListFields():
        if _is_map(descriptor):
            entries = getattr(message, descriptor.name)
            for key in list(entries):
                item = entries[key]
                if isinstance(item, str):
                    entries[key] = shorten(item, MAX_DETAIL_CHARS)
                elif isinstance(item, Message):
                    _shorten_strings(item)
        elif descriptor.type == FieldDescriptor.TYPE_STRING:
            if descriptor.is_repeated:
                values = getattr(message, descriptor.name)
                values[:] = [shorten(v, MAX_DETAIL_CHARS) for v in values]
            else:
                setattr(message, descriptor.name, shorten(value, MAX_DETAIL_CHARS))
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if descriptor.is_repeated else (value,):
                _shorten_strings(item)


def to_status(code: grpc.StatusCode, message: str, details: Sequence[object] = ()) -> grpc.Status:
    """A ``grpc.Status`` with ``google.rpc`` details, for ``abort_with_status``."""
    return rpc_status.to_status(_status_proto(code, message, details))


def status_code_name(code: int) -> str:
    """``"INVALID_ARGUMENT"`` for 3, and so on."""
    return str(code_pb2.Code.Name(code))
