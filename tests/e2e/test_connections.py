"""Jobs outlive their connection: a dropped or stalled stream leaves the job running until
it ends or its deadline passes; cancelling is explicit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from retouch.sdk import CostModel, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.policy import Plan
from retouch.v1 import account_pb2, common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, photo, png, read_all, read_one, square_mask

SUBJECT = "user:lee"
IMAGE = png(photo((64, 64)))
MASK = png(square_mask((64, 64), (16, 16, 32, 32)))
PAID = Plan("paid", credits=True, monthly_jobs=10, rate_per_s=1000, burst=1000)


def inpaint(**fields: Any) -> pb.InpaintRequest:
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=IMAGE),
        mask=common_pb2.ImageInput(data=MASK),
        **fields,
    )


def held_provider() -> tuple[FakeProvider, asyncio.Event]:
    release = asyncio.Event()
    return (
        FakeProvider(
            "held", [Operation.INPAINT], cost=CostModel(credits_per_job=3), release=release
        ),
        release,
    )


async def usage(h: Any) -> Any:
    return await h.account.GetUsage(
        account_pb2.GetUsageRequest(), metadata=metadata(subject=SUBJECT)
    )


async def grant(h: Any, credits: int) -> None:
    await h.account.GrantCredits(
        account_pb2.GrantCreditsRequest(subject=SUBJECT, credits=credits), metadata=metadata()
    )


async def own_channel(h: Any) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(f"127.0.0.1:{h.server.port}") as channel:
        yield channel


async def ended_status(h: Any, job_id: str) -> grpc.StatusCode:
    """Follow the job with WatchJob until it ends; the status it ended with."""
    watch = h.edit.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=metadata(subject=SUBJECT))
    try:
        await read_all(watch)
    except aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_dropped_connection_leaves_the_job_running_and_a_resend_gets_its_result(
    harness: Any,
) -> None:
    fake, release = held_provider()
    async with harness(plans=[PAID], providers=[fake]) as h:
        await grant(h, 10)
        request = inpaint(request_id="drop-1")
        async for channel in own_channel(h):
            call = image_edit_pb2_grpc.ImageEditStub(channel).Inpaint(
                request, metadata=metadata(subject=SUBJECT)
            )
            accepted = await read_one(call)
        live = h.server.jobs.live_job(accepted.job_id)
        await live.wait_for_followers(0)  # the server saw the stream end
        job = await h.edit.GetJob(
            pb.GetJobRequest(job_id=accepted.job_id), metadata=metadata(subject=SUBJECT)
        )
        assert job.state == pb.JOB_STATE_RUNNING
        release.set()
        again = await read_all(h.edit.Inpaint(request, metadata=metadata(subject=SUBJECT)))
        assert {e.job_id for e in again} == {accepted.job_id}
        assert [e.seq for e in again] == list(range(1, len(again) + 1))
        assert again[-1].HasField("completed")
        assert fake.calls == 1
        after = await usage(h)
        assert (after.credits_balance, after.credits_reserved, after.quota_used) == (7, 0, 1)


async def test_a_client_that_stops_reading_does_not_hold_the_job_back(harness: Any) -> None:
    # Enough progress events to fill the stalled stream's HTTP/2 window many times over.
    chatty = FakeProvider("chatty", [Operation.INPAINT], steps=5000)
    async with harness(plans=[PAID], providers=[chatty]) as h:
        await grant(h, 10)
        stalled = h.edit.Inpaint(inpaint(), metadata=metadata(subject=SUBJECT))
        accepted = await read_one(stalled)
        assert await ended_status(h, accepted.job_id) == grpc.StatusCode.OK
        stalled.cancel()


async def test_cancel_on_disconnect_cancels_the_job_when_its_stream_ends(harness: Any) -> None:
    fake, _ = held_provider()
    async with harness(plans=[PAID], providers=[fake]) as h:
        await grant(h, 10)
        async for channel in own_channel(h):
            call = image_edit_pb2_grpc.ImageEditStub(channel).Inpaint(
                inpaint(cancel_on_disconnect=True), metadata=metadata(subject=SUBJECT)
            )
            accepted = await read_one(call)
        assert await ended_status(h, accepted.job_id) == grpc.StatusCode.CANCELLED
        job = await h.edit.GetJob(
            pb.GetJobRequest(job_id=accepted.job_id), metadata=metadata(subject=SUBJECT)
        )
        assert (job.state, job.cost_credits) == (pb.JOB_STATE_CANCELLED, 0)
        after = await usage(h)
        assert (after.credits_balance, after.credits_reserved, after.quota_used) == (10, 0, 0)


async def test_the_callers_deadline_ends_the_job_as_deadline_exceeded_and_refunds(
    harness: Any,
) -> None:
    fake, _ = held_provider()
    async with harness(plans=[PAID], providers=[fake]) as h:
        await grant(h, 10)
        call = h.edit.Inpaint(inpaint(), metadata=metadata(subject=SUBJECT), timeout=0.5)
        accepted = await read_one(call)
        with pytest.raises(aio.AioRpcError) as ended:
            await read_all(call)
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await ended_status(h, accepted.job_id) == grpc.StatusCode.DEADLINE_EXCEEDED
        job = await h.edit.GetJob(
            pb.GetJobRequest(job_id=accepted.job_id), metadata=metadata(subject=SUBJECT)
        )
        assert (job.state, job.error_code) == (pb.JOB_STATE_CANCELLED, "DEADLINE_EXCEEDED")
        after = await usage(h)
        assert (after.credits_balance, after.credits_reserved, after.quota_used) == (10, 0, 0)


async def test_a_job_without_a_deadline_gets_the_configured_one(harness: Any) -> None:
    fake, _ = held_provider()
    async with harness(plans=[PAID], providers=[fake], job_deadline_s=0.3) as h:
        await grant(h, 10)
        call = h.edit.Inpaint(inpaint(), metadata=metadata(subject=SUBJECT))
        accepted = await read_one(call)
        with pytest.raises(aio.AioRpcError) as ended:
            await read_all(call)
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert fake.cancelled == 1
        after = await usage(h)
        assert (after.credits_balance, after.credits_reserved, after.quota_used) == (10, 0, 0)
        assert accepted.accepted.estimated_cost_credits == 3
