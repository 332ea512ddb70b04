"""Two replicas on one PostgreSQL give the same answers as one: exact quotas and credits,
one job per request_id, jobs followed, cancelled and downloaded from either."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import grpc
import pytest
from grpc import aio

from retouch.sdk import CostModel, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.policy import Plan
from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, photo, png, read_all, read_one, square_mask
from tests.replicas.conftest import SUBJECT, Replica

IMAGE = png(photo((64, 64)))
MASK = png(square_mask((64, 64), (16, 16, 40, 40)))


def inpaint(**fields: Any) -> pb.InpaintRequest:
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=IMAGE), mask=common_pb2.ImageInput(data=MASK), **fields
    )


async def outcome(
    replica: Replica, request: pb.InpaintRequest
) -> list[pb.JobEvent] | aio.AioRpcError:
    try:
        return await read_all(replica.edit.Inpaint(request, metadata=metadata(subject=SUBJECT)))
    except aio.AioRpcError as error:
        return error


def fast() -> FakeProvider:
    return FakeProvider("fake", [Operation.INPAINT], steps=1, cost=CostModel(credits_per_job=1))


async def test_200_jobs_over_both_replicas_against_a_quota_of_50_run_exactly_50(
    replicas: Any,
) -> None:
    plan = Plan("fifty", monthly_jobs=50, rate_per_s=1e6, burst=10**6)
    async with replicas(plan=plan, first=[fast()], second=[fast()]) as r:
        results = await asyncio.gather(*(outcome(r.both[i % 2], inpaint()) for i in range(200)))
        done = [x for x in results if isinstance(x, list)]
        refused = [x for x in results if isinstance(x, aio.AioRpcError)]
        assert len(done) == 50
        assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all(events[-1].HasField("completed") for events in done)
        usage = await r.usage()
        assert (usage.quota_used, usage.quota_left) == (50, 0)


async def test_40_jobs_over_both_replicas_on_10_credits_never_overspend(replicas: Any) -> None:
    plan = Plan("paid", credits=True, rate_per_s=1e6, burst=10**6)
    async with replicas(plan=plan, first=[fast()], second=[fast()]) as r:
        await r.grant(10)
        results = await asyncio.gather(*(outcome(r.both[i % 2], inpaint()) for i in range(40)))
        assert sum(isinstance(x, list) for x in results) == 10
        usage = await r.usage()
        assert (usage.credits_balance, usage.credits_reserved) == (0, 0)
        assert await r.first.server.ledger.audit(f"dev/{SUBJECT}")


async def test_one_request_id_sent_to_both_replicas_makes_one_job_and_one_charge(
    replicas: Any,
) -> None:
    plan = Plan("paid", credits=True, rate_per_s=1e6, burst=10**6)
    async with replicas(plan=plan, first=[fast()], second=[fast()]) as r:
        await r.grant(10)
        request = inpaint(request_id="once")
        results = await asyncio.gather(*(outcome(r.both[i % 2], request) for i in range(10)))
        assert all(isinstance(x, list) for x in results)
        assert len({events[0].job_id for events in results if isinstance(events, list)}) == 1
        usage = await r.usage()
        assert (usage.credits_balance, usage.credits_reserved) == (9, 0)


async def test_watch_and_cancel_a_job_from_the_replica_that_did_not_start_it(
    replicas: Any,
) -> None:
    release = asyncio.Event()
    held = FakeProvider("fake", [Operation.INPAINT], steps=3, release=release)
    plan = Plan("paid", credits=True, monthly_jobs=10, rate_per_s=1e6, burst=10**6)
    async with replicas(plan=plan, first=[held], second=[fast()]) as r:
        await r.grant(10)
        call = r.first.edit.Inpaint(inpaint(), metadata=metadata(subject=SUBJECT))
        accepted = await read_one(call)
        watch = r.second.edit.WatchJob(
            pb.WatchJobRequest(job_id=accepted.job_id), metadata=metadata(subject=SUBJECT)
        )
        # Live: the Accepted event, its place (it took a free slot) and the three steps
        # arrive while the job still runs.
        seen = [await read_one(watch) for _ in range(5)]
        assert [e.seq for e in seen] == [1, 2, 3, 4, 5]
        assert seen[0] == accepted
        assert (seen[1].progress.stage, seen[1].progress.queue_position) == ("queued", 0)
        assert seen[-1].progress.stage == "step 3/3"
        assert r.first.server.jobs.live_job(accepted.job_id) is not None
        job = await r.second.edit.CancelJob(
            pb.CancelJobRequest(job_id=accepted.job_id), metadata=metadata(subject=SUBJECT)
        )
        assert (job.state, job.error_code, job.cost_credits) == (
            pb.JOB_STATE_CANCELLED,
            "CANCELLED",
            0,
        )
        assert held.cancelled == 1
        for stream in (call, watch):
            with pytest.raises(aio.AioRpcError) as ended:
                await read_all(stream)
            assert ended.value.code() == grpc.StatusCode.CANCELLED
        usage = await r.usage()
        assert (usage.credits_balance, usage.credits_reserved, usage.quota_used) == (10, 0, 0)


async def test_a_result_written_through_one_replica_downloads_and_links_through_the_other(
    replicas: Any,
) -> None:
    plan = Plan("free", rate_per_s=1e6, burst=10**6)
    async with replicas(plan=plan, first=[fast()], second=[fast()]) as r:
        events = await read_all(
            r.first.edit.Inpaint(
                inpaint(output=common_pb2.OutputOptions(inline=True)),
                metadata=metadata(subject=SUBJECT),
            )
        )
        completed = events[-1].completed
        chunks = [
            chunk
            async for chunk in r.second.edit.DownloadResult(
                pb.DownloadResultRequest(result_id=completed.result_id),
                metadata=metadata(subject=SUBJECT),
            )
        ]
        assert b"".join(c.data for c in chunks) == completed.data
        job = await r.second.edit.GetJob(
            pb.GetJobRequest(job_id=events[0].job_id), metadata=metadata(subject=SUBJECT)
        )
        assert job.result_id == completed.result_id
        # Presigned by S3, the link works whichever replica handed it out.
        for url in (completed.result_url, job.result_url):
            async with aiohttp.ClientSession() as session, session.get(url) as answer:
                assert answer.status == 200
                assert await answer.read() == completed.data
