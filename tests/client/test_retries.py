"""Retries: only what the server says to retry, after the delay it names, with the same
request_id, so that a retried edit can never be charged twice."""

from __future__ import annotations

import uuid

import grpc
import pytest

from retouch.client import (
    AsyncClient,
    InvalidArgument,
    ResourceExhausted,
    RetryPolicy,
    Unavailable,
)
from retouch.client._retry import Deadline
from retouch.server.errors import InvalidArgument as ServerInvalidArgument
from retouch.server.errors import QuotaViolation, to_status
from retouch.server.errors import ResourceExhausted as ServerResourceExhausted
from retouch.server.errors import Unavailable as ServerUnavailable
from tests.client.fakes import ScriptedEdits, Sleeps, Step, job_events

RATE_LIMITED = ServerResourceExhausted(
    "too many requests: wait 1.5 s",
    violations=[QuotaViolation("subject", "40 requests per 2 s")],
    retry_after=1.5,
    reason="RATE_LIMITED",
).to_status()
QUOTA_SPENT = ServerResourceExhausted(
    "the monthly quota is spent",
    violations=[QuotaViolation("quota", "100 jobs per month")],
    reason="MONTHLY_QUOTA_EXHAUSTED",
).to_status()
NO_PROVIDER = ServerUnavailable("every capable provider is down", retry_after=2.0).to_status()
BAD_MASK = ServerInvalidArgument("mask", "the mask is empty").to_status()
LOST_STREAM = to_status(grpc.StatusCode.UNAVAILABLE, "Socket closed")  # no RetryInfo


async def test_a_rate_limited_edit_is_retried_after_retry_info_with_the_same_request_id() -> None:
    edits = ScriptedEdits([Step(status=RATE_LIMITED), Step(events=job_events())])
    sleeps = Sleeps()

    async with (
        edits.serve() as target,
        AsyncClient(target, api_key="k", subject="user:7", sleep=sleeps) as client,
    ):
        result = await client.inpaint(b"image", mask=b"mask")

    assert result.result_id == "res_1"
    assert sleeps.calls == [1.5]
    first, second = edits.requests
    assert first.request_id == second.request_id
    uuid.UUID(first.request_id)
    assert first == second  # the same request, so the server's fingerprint matches
    assert edits.metadata[1]["authorization"] == "Bearer k"
    assert edits.metadata[1]["x-retouch-subject"] == "user:7"


async def test_a_given_request_id_is_sent_on_every_attempt() -> None:
    edits = ScriptedEdits([Step(status=NO_PROVIDER), Step(events=job_events())])
    sleeps = Sleeps()

    async with edits.serve() as target, AsyncClient(target, api_key="k", sleep=sleeps) as client:
        job = client.inpaint(b"image", request_id="order-17")
        await job

    assert job.request_id == "order-17"
    assert [r.request_id for r in edits.requests] == ["order-17", "order-17"]
    assert sleeps.calls == [2.0]


@pytest.mark.parametrize("status", [BAD_MASK, QUOTA_SPENT])
async def test_what_waiting_cannot_fix_is_never_retried(status: grpc.Status) -> None:
    edits = ScriptedEdits([Step(status=status), Step(events=job_events())])
    sleeps = Sleeps()

    async with edits.serve() as target, AsyncClient(target, api_key="k", sleep=sleeps) as client:
        with pytest.raises((InvalidArgument, ResourceExhausted)) as raised:
            await client.inpaint(b"image")

    assert len(edits.requests) == 1
    assert sleeps.calls == []
    assert raised.value.retry_after is None


async def test_retries_stop_after_max_attempts_with_the_last_error() -> None:
    edits = ScriptedEdits([Step(status=NO_PROVIDER)])
    sleeps = Sleeps()

    async with edits.serve() as target, AsyncClient(target, api_key="k", sleep=sleeps) as client:
        with pytest.raises(Unavailable) as raised:
            await client.inpaint(b"image")

    assert len(edits.requests) == 3
    assert sleeps.calls == [2.0, 2.0]
    assert raised.value.retry_after == 2.0


async def test_a_retry_that_would_outlast_the_deadline_is_not_attempted() -> None:
    edits = ScriptedEdits([Step(status=RATE_LIMITED), Step(events=job_events())])
    sleeps = Sleeps()

    async with edits.serve() as target, AsyncClient(target, api_key="k", sleep=sleeps) as client:
        with pytest.raises(ResourceExhausted) as raised:
            await client.inpaint(b"image", timeout_s=1.0)

    assert sleeps.calls == []
    assert raised.value.reason == "RATE_LIMITED"
    assert raised.value.quota_violations == [("subject", "40 requests per 2 s")]


async def test_a_lost_stream_is_resumed_and_replayed_events_are_skipped() -> None:
    events = job_events()
    edits = ScriptedEdits([Step(events=events[:2], status=LOST_STREAM), Step(events=events)])
    sleeps = Sleeps()

    async with edits.serve() as target, AsyncClient(target, api_key="k", sleep=sleeps) as client:
        seen = [event.seq async for event in client.inpaint(b"image")]

    assert seen == [1, 2, 3, 4]
    assert sleeps.calls == [0.25]  # no RetryInfo: the policy's backoff
    assert edits.requests[0].request_id == edits.requests[1].request_id


async def test_a_job_that_failed_after_it_started_is_not_resubmitted() -> None:
    # The same request_id would only replay the failure.
    edits = ScriptedEdits([Step(events=job_events()[:2], status=NO_PROVIDER)])
    sleeps = Sleeps()

    async with edits.serve() as target, AsyncClient(target, api_key="k", sleep=sleeps) as client:
        job = client.inpaint(b"image")
        with pytest.raises(Unavailable):
            await job
        with pytest.raises(Unavailable):  # awaiting again gives the same error
            await job

    assert len(edits.requests) == 1
    assert sleeps.calls == []


async def test_no_retries_with_a_single_attempt_policy() -> None:
    edits = ScriptedEdits([Step(status=RATE_LIMITED), Step(events=job_events())])
    sleeps = Sleeps()
    single = RetryPolicy(max_attempts=1)

    async with (
        edits.serve() as target,
        AsyncClient(target, api_key="k", sleep=sleeps, retry=single) as client,
    ):
        with pytest.raises(ResourceExhausted):
            await client.inpaint(b"image")

    assert len(edits.requests) == 1


def test_the_policy_waits_what_retry_info_says_up_to_max_delay() -> None:
    policy = RetryPolicy(max_attempts=4, backoff=0.5, max_delay=10.0)
    limited = ResourceExhausted(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow", retry_after=3.0)
    too_long = ResourceExhausted(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow", retry_after=60.0)
    unreachable = Unavailable(grpc.StatusCode.UNAVAILABLE, "connection refused")

    assert policy.delay(limited, 1) == 3.0
    assert policy.delay(too_long, 1) is None
    assert [policy.delay(unreachable, n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, None]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_a_deadline_counts_down_on_its_clock() -> None:
    now = [100.0]
    deadline = Deadline(5.0, clock=lambda: now[0])
    now[0] = 103.0

    assert deadline.remaining() == 2.0
    assert deadline.allows(1.5)
    assert not deadline.allows(2.5)
    assert Deadline(None).remaining() is None
