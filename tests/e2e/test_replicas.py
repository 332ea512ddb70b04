"""Two replicas on one PostgreSQL: one set of jobs, one ledger, whichever replica is asked."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc import aio

from retouch.sdk import CostModel, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.policy import Plan
from retouch.v1 import account_pb2, common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.engines.postgres import PostgresServer
from tests.helpers import metadata, photo, png, square_mask

SUBJECT = "user:alice"
IMAGE = png(photo((64, 64)))
MASK = png(square_mask((64, 64), (16, 16, 32, 32)))
PAID = Plan("paid", credits=True, credits_per_job=1, rate_per_s=1000, burst=1000)


def inpaint(request_id: str = "") -> pb.InpaintRequest:
    return pb.InpaintRequest(
        request_id=request_id,
        image=common_pb2.ImageInput(data=IMAGE),
        mask=common_pb2.ImageInput(data=MASK),
    )


async def outcome(edit: Any, request: pb.InpaintRequest) -> list[pb.JobEvent] | aio.AioRpcError:
    try:
        return [e async for e in edit.Inpaint(request, metadata=metadata(subject=SUBJECT))]
    except aio.AioRpcError as error:
        return error


def fake() -> FakeProvider:
    return FakeProvider("fake", [Operation.INPAINT], cost=CostModel(credits_per_job=1), steps=2)


async def test_forty_jobs_over_two_replicas_on_ten_credits_never_overspend(
    harness: Any, postgres: PostgresServer
) -> None:
    database = postgres.new_database()
    async with (
        harness(plans=[PAID], providers=[fake()], database=database) as one,
        harness(plans=[PAID], providers=[fake()], database=database) as two,
    ):
        granted = await one.account.GrantCredits(
            account_pb2.GrantCreditsRequest(subject=SUBJECT, credits=20), metadata=metadata()
        )
        assert granted.credits_balance == 20  # 10 jobs of 2 credits
        replicas = (one.edit, two.edit)
        results = await asyncio.gather(*(outcome(replicas[i % 2], inpaint()) for i in range(40)))
        done = [r for r in results if isinstance(r, list)]
        refused = [r for r in results if isinstance(r, aio.AioRpcError)]
        assert len(done) == 10
        assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        for replica in (one, two):
            usage = await replica.usage(SUBJECT)
            assert (usage.credits_balance, usage.credits_reserved) == (0, 0)
        assert await two.server.ledger.audit(f"dev/{SUBJECT}")


async def test_the_other_replica_returns_the_same_job_for_a_request_id_and_its_result(
    harness: Any, postgres: PostgresServer
) -> None:
    database = postgres.new_database()
    first, second = fake(), fake()
    async with (
        harness(plans=[PAID], providers=[first], database=database) as one,
        harness(plans=[PAID], providers=[second], database=database) as two,
    ):
        await one.account.GrantCredits(
            account_pb2.GrantCreditsRequest(subject=SUBJECT, credits=10), metadata=metadata()
        )
        events = await outcome(one.edit, inpaint("once"))
        again = await outcome(two.edit, inpaint("once"))
        assert isinstance(events, list)
        assert isinstance(again, list)
        assert again[0].job_id == events[0].job_id
        assert again[-1].completed.result_id == events[-1].completed.result_id
        assert (first.calls, second.calls) == (1, 0)
        assert (await two.usage(SUBJECT)).credits_balance == 10 - 2  # one charge

        job_id = events[0].job_id
        job = await two.edit.GetJob(
            pb.GetJobRequest(job_id=job_id), metadata=metadata(subject=SUBJECT)
        )
        assert job.state == pb.JOB_STATE_SUCCEEDED
        listed = await two.edit.ListJobs(pb.ListJobsRequest(), metadata=metadata(subject=SUBJECT))
        assert [j.job_id for j in listed.jobs] == [job_id]
        chunks = two.edit.DownloadResult(
            pb.DownloadResultRequest(result_id=job.result_id), metadata=metadata(subject=SUBJECT)
        )
        downloaded = b"".join([chunk.data async for chunk in chunks])
        assert len(downloaded) == job.result.size_bytes > 0
