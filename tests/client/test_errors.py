"""Statuses become exceptions whose attributes hold the google.rpc details."""

from __future__ import annotations

import grpc
import pytest

from retouch.client import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RetouchError,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from retouch.client._errors import error_for
from retouch.server.errors import FieldViolation as ServerViolation
from retouch.server.errors import InvalidArgument as ServerInvalidArgument
from retouch.server.errors import QuotaViolation as ServerQuota
from retouch.server.errors import ResourceExhausted as ServerResourceExhausted


def trailers(status: grpc.Status) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(status.trailing_metadata)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.CANCELLED, Cancelled),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNKNOWN, ServerError),
        (grpc.StatusCode.FAILED_PRECONDITION, ServerError),
    ],
)
def test_each_code_has_its_exception(code: grpc.StatusCode, kind: type[RetouchError]) -> None:
    error = error_for(code, "words")

    assert type(error) is kind
    assert (error.code, error.message, error.reason, error.details) == (code, "words", None, [])


def test_every_field_violation_is_kept() -> None:
    status = ServerInvalidArgument.of(
        [ServerViolation("mask", "wrong size"), ServerViolation("left", "too large")]
    ).to_status()

    error = error_for(status.code, status.details, trailers(status))

    assert error.field_violations == [("mask", "wrong size"), ("left", "too large")]
    assert error.field_violations[1].field == "left"


def test_rate_limits_carry_quota_violations_reason_and_retry_after() -> None:
    status = ServerResourceExhausted(
        "slow down",
        violations=[ServerQuota("tenant", "200 requests per 2 s")],
        retry_after=0.25,
        reason="RATE_LIMITED",
    ).to_status()

    error = error_for(status.code, status.details, trailers(status))

    assert isinstance(error, ResourceExhausted)
    assert error.quota_violations == [("tenant", "200 requests per 2 s")]
    assert error.reason == "RATE_LIMITED"
    assert error.retry_after == 0.25
    assert len(error.details) == 3


def test_garbled_details_leave_the_status_intact() -> None:
    error = error_for(
        grpc.StatusCode.UNAVAILABLE, "down", (("grpc-status-details-bin", b"\xff\x00junk"),)
    )

    assert isinstance(error, Unavailable)
    assert (error.message, error.details, error.retry_after) == ("down", [], None)
