"""Exact with money: quotas and credits under concurrency, refunds on every failure."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio

from retouch.sdk import CostModel, Operation, ProviderRejected
from retouch.sdk.testing import FakeProvider
from retouch.server.policy import Plan
from retouch.v1 import account_pb2, common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, photo, png, read_all, read_one, rpc_details, square_mask

SUBJECT = "user:alice"
IMAGE = png(photo((64, 64)))
MASK = png(square_mask((64, 64), (16, 16, 32, 32)))


def inpaint(request_id: str = "", **fields: Any) -> pb.InpaintRequest:
    return pb.InpaintRequest(
        request_id=request_id,
        image=common_pb2.ImageInput(data=IMAGE),
        mask=common_pb2.ImageInput(data=MASK),
        **fields,
    )


async def outcome(edit: Any, request: pb.InpaintRequest, subject: str = SUBJECT) -> Any:
    """The events of a call, or the AioRpcError it ended with."""
    try:
        return [e async for e in edit.Inpaint(request, metadata=metadata(subject=subject))]
    except aio.AioRpcError as error:
        return error


async def grant(account: Any, credits: int, subject: str = SUBJECT, request_id: str = "") -> int:
    answer = await account.GrantCredits(
        account_pb2.GrantCreditsRequest(subject=subject, credits=credits, request_id=request_id),
        metadata=metadata(),
    )
    return int(answer.credits_balance)


async def test_a_quota_of_40_lets_exactly_40_of_100_concurrent_jobs_through(
    harness: Any,
) -> None:
    fake = FakeProvider("fake", [Operation.INPAINT], steps=2, step_delay=0.01)
    plan = Plan("forty", monthly_jobs=40, rate_per_s=1000, burst=1000)
    async with harness(plans=[plan], providers=[fake]) as h:
        results = await asyncio.gather(*(outcome(h.edit, inpaint()) for _ in range(100)))

        done = [r for r in results if isinstance(r, list)]
        refused = [r for r in results if isinstance(r, aio.AioRpcError)]
        assert len(done) == 40
        assert all(r[-1].HasField("completed") for r in done)
        assert len(refused) == 60
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            kinds = {type(d) for d in rpc_details(error)}
            assert error_details_pb2.QuotaFailure in kinds
            assert error_details_pb2.RetryInfo not in kinds
        usage = await h.usage(SUBJECT)
        assert (usage.quota_used, usage.quota_left) == (40, 0)
        assert fake.calls == 40
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")


async def test_concurrent_jobs_never_spend_more_than_the_balance(harness: Any) -> None:
    fake = FakeProvider("fake", [Operation.INPAINT], cost=CostModel(credits_per_job=3), steps=1)
    plan = Plan("paid", credits=True, credits_per_job=1, rate_per_s=1000, burst=1000)
    async with harness(plans=[plan], providers=[fake]) as h:
        assert await grant(h.account, 50) == 50  # 12 jobs of 4 credits, 2 left over
        results = await asyncio.gather(*(outcome(h.edit, inpaint()) for _ in range(30)))
        done = [r for r in results if isinstance(r, list)]
        assert len(done) == 12
        assert all(r[-1].completed.cost_credits == 4 for r in done)
        assert {r[0].accepted.estimated_cost_credits for r in done} == {4}
        refused = [r for r in results if isinstance(r, aio.AioRpcError)]
        assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved) == (2, 0)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")


@pytest.mark.parametrize(
    "how", ["provider-fails", "client-cancels-on-disconnect", "deadline", "cancel-job"]
)
async def test_a_job_that_does_not_finish_is_refunded(harness: Any, how: str) -> None:
    release = asyncio.Event()
    fake = FakeProvider(
        "fake",
        [Operation.INPAINT],
        steps=1,
        fail_with=ProviderRejected("cannot do that") if how == "provider-fails" else None,
        fail_after=1,
        release=release,
    )
    plan = Plan("paid", credits=True, monthly_jobs=10)
    async with harness(plans=[plan], providers=[fake]) as h:
        await grant(h.account, 10)
        timeout = 0.5 if how == "deadline" else None
        request = inpaint(cancel_on_disconnect=how == "client-cancels-on-disconnect")
        call = h.edit.Inpaint(request, metadata=metadata(subject=SUBJECT), timeout=timeout)
        accepted = await read_one(call)
        assert accepted.accepted.estimated_cost_credits == 1
        if how == "provider-fails":
            release.set()
        elif how == "client-cancels-on-disconnect":
            call.cancel()
        elif how == "cancel-job":
            await h.edit.CancelJob(
                pb.CancelJobRequest(job_id=accepted.job_id), metadata=metadata(subject=SUBJECT)
            )
        with pytest.raises((aio.AioRpcError, asyncio.CancelledError)):
            await read_all(call)
        job = await wait_terminal(h.edit, accepted.job_id)
        expected = {
            "provider-fails": pb.JOB_STATE_FAILED,
            "client-cancels-on-disconnect": pb.JOB_STATE_CANCELLED,
            "deadline": pb.JOB_STATE_CANCELLED,
            "cancel-job": pb.JOB_STATE_CANCELLED,
        }[how]
        assert job.state == expected
        assert job.cost_credits == 0
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved, usage.quota_used) == (10, 0, 0)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")


async def wait_terminal(edit: Any, job_id: str) -> Any:
    """The job's record once WatchJob saw it end."""
    watch = edit.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=metadata(subject=SUBJECT))
    with contextlib.suppress(aio.AioRpcError):
        await read_all(watch)
    return await edit.GetJob(pb.GetJobRequest(job_id=job_id), metadata=metadata(subject=SUBJECT))


async def test_duplicate_request_ids_make_one_job_and_one_charge(harness: Any) -> None:
    fake = FakeProvider("fake", [Operation.INPAINT], steps=3, step_delay=0.02)
    plan = Plan("paid", credits=True, credits_per_job=1)
    async with harness(plans=[plan], providers=[fake]) as h:
        await grant(h.account, 10)
        concurrent = await asyncio.gather(*(outcome(h.edit, inpaint("same")) for _ in range(8)))
        again = await outcome(h.edit, inpaint("same"))
        assert all(isinstance(r, list) for r in [*concurrent, again])
        assert len({r[0].job_id for r in [*concurrent, again]}) == 1
        assert len({r[-1].completed.result_id for r in [*concurrent, again]}) == 1
        assert fake.calls == 1
        usage = await h.usage(SUBJECT)
        assert usage.credits_balance == 10 - 2


async def test_grants_are_idempotent_and_admin_only(harness: Any) -> None:
    from tests.conftest import OTHER_KEY

    fake = FakeProvider("fake", [Operation.INPAINT])
    async with harness(plans=[Plan("paid", credits=True)], providers=[fake]) as h:
        assert await grant(h.account, 5, request_id="g1") == 5
        assert await grant(h.account, 5, request_id="g1") == 5
        assert await grant(h.account, 5, request_id="g2") == 10
        with pytest.raises(aio.AioRpcError) as refused:
            await h.account.GrantCredits(
                account_pb2.GrantCreditsRequest(subject=SUBJECT, credits=5),
                metadata=metadata(key=OTHER_KEY),
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(aio.AioRpcError) as negative:
            await grant(h.account, -5)
        assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_grant_request_id_reused_for_another_amount_is_refused(harness: Any) -> None:
    fake = FakeProvider("fake", [Operation.INPAINT])
    async with harness(plans=[Plan("paid", credits=True)], providers=[fake]) as h:
        assert await grant(h.account, 3, request_id="g1") == 3
        with pytest.raises(aio.AioRpcError) as reused:
            await grant(h.account, 7, request_id="g1")
        assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        (bad_request,) = rpc_details(reused.value)
        assert isinstance(bad_request, error_details_pb2.BadRequest)
        assert [v.field for v in bad_request.field_violations] == ["request_id"]
        assert "already used for a different request" in (reused.value.details() or "")
        assert (await h.usage(SUBJECT)).credits_balance == 3


async def test_results_are_deleted_when_their_plan_retention_ends(harness: Any) -> None:
    from retouch.server.clock import ManualClock

    clock = ManualClock()
    fake = FakeProvider("fake", [Operation.INPAINT], steps=1)
    async with harness(plans=[Plan("short", retention_days=2)], providers=[fake], clock=clock) as h:
        events = await outcome(h.edit, inpaint())
        result_id = events[-1].completed.result_id
        download = pb.DownloadResultRequest(result_id=result_id)
        clock.advance(86_400)
        assert await h.server.retention.sweep() == 0
        chunks = [
            c async for c in h.edit.DownloadResult(download, metadata=metadata(subject=SUBJECT))
        ]
        assert chunks
        clock.advance(86_400)
        assert await h.server.retention.sweep() == 1
        with pytest.raises(aio.AioRpcError) as gone:
            async for _ in h.edit.DownloadResult(download, metadata=metadata(subject=SUBJECT)):
                pass
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_input_is_refused_before_any_charge(harness: Any) -> None:
    fake = FakeProvider("fake", [Operation.INPAINT])
    async with harness(plans=[Plan("paid", credits=True, monthly_jobs=5)], providers=[fake]) as h:
        await grant(h.account, 10)
        bad_image = pb.InpaintRequest(
            image=common_pb2.ImageInput(data=b"not an image"),
            mask=common_pb2.ImageInput(data=MASK),
        )
        wrong_mask = pb.InpaintRequest(
            image=common_pb2.ImageInput(data=IMAGE),
            mask=common_pb2.ImageInput(data=png(square_mask((32, 32), (1, 1, 5, 5)))),
        )
        for request in (bad_image, wrong_mask):
            error = await outcome(h.edit, request)
            assert isinstance(error, aio.AioRpcError)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fake.calls == 0
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved, usage.quota_used) == (10, 0, 0)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")
