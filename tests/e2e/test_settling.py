"""A success is told as soon as it is recorded and charged once its result is durable: a
result that cannot be flushed to disk, or that is gone when a dead replica's success is
settled, is refunded instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc import aio

from retouch.sdk import CostModel, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.app import running
from retouch.server.clock import ManualClock
from retouch.server.jobs import JobState, ResultRecord
from retouch.server.storage import StorageError
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.e2e.test_leases import OWNER, config, left_behind, registry
from tests.helpers import metadata, photo, png, read_all, square_mask

COST = CostModel(credits_per_job=2)


def inpaint() -> pb.InpaintRequest:
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=png(photo((64, 64)))),
        mask=common_pb2.ImageInput(data=png(square_mask((64, 64), (8, 8, 24, 24)))),
    )


async def test_a_result_that_cannot_be_flushed_is_told_but_refunded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    provider = FakeProvider("fake", [Operation.INPAINT], cost=COST)
    async with running(config(tmp_path), registry=await registry(provider), clock=clock) as server:
        await server.ledger.grant(OWNER, 10, request_id="", note="test", now=clock.now())
        flushed: list[str] = []

        async def disk_full(key: str) -> None:
            flushed.append(key)
            raise StorageError(f"could not sync {key!r}: No space left on device")

        monkeypatch.setattr(server.objects, "sync", disk_full)
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            edit = image_edit_pb2_grpc.ImageEditStub(channel)
            events = await read_all(edit.Inpaint(inpaint(), metadata=metadata()))
        assert events[-1].HasField("completed")
        job = await server.store.get_job(events[0].job_id)
        assert job is not None
        assert job.state is JobState.SUCCEEDED
        result = await server.store.get_result(job.result_id)
        assert result is not None
        assert flushed == [result.object_key]
        balance = await server.ledger.balance(OWNER, server.pipeline._policy.period())
        assert (balance.available, balance.held, balance.jobs_used) == (10, 0, 0)
        assert await server.ledger.audit(OWNER)
        # GetJob tells what was charged: nothing.
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            edit = image_edit_pb2_grpc.ImageEditStub(channel)
            told = await edit.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=metadata())
        assert told.state == pb.JOB_STATE_SUCCEEDED
        assert told.cost_credits == 0


@pytest.mark.parametrize("result_on_disk", [True, False], ids=["result-kept", "result-lost"])
async def test_a_dead_replicas_success_is_charged_only_if_its_result_survived(
    tmp_path: Path, result_on_disk: bool
) -> None:
    clock = ManualClock()
    async with running(
        config(tmp_path), registry=await registry(FakeProvider("idle")), clock=clock
    ) as server:
        ledger, now = server.ledger, clock.now()
        await ledger.grant(OWNER, 10, request_id="", note="test", now=now)
        # A job as a replica left it that died after recording its success, before
        # settling its charge.
        result = ResultRecord(
            result_id="res_settled",
            job_id="job_settled",
            owner=OWNER,
            object_key="results/job_settled.png",
            content_type="image/png",
            format="PNG",
            width=64,
            height=64,
            size_bytes=3,
            created_at=now,
        )
        if result_on_disk:
            await server.objects.put(
                result.object_key, b"png", content_type="image/png", durable=False
            )
        await server.store.create_or_get(
            left_behind(
                result.job_id,
                now,
                state=JobState.SUCCEEDED,
                result_id=result.result_id,
                cost_credits=2,
            )
        )
        await server.store.add_result(result)
        period = server.pipeline._policy.period()
        await ledger.reserve(
            result.job_id, OWNER, credits=2, period=period, quota=10, charge_credits=True, now=now
        )

        assert await server.jobs.settle_orphans() == 1

        balance = await ledger.balance(OWNER, period)
        expected = (8, 0, 1) if result_on_disk else (10, 0, 0)
        assert (balance.available, balance.held, balance.jobs_used) == expected
        assert await ledger.audit(OWNER)
        settled = await server.store.get_job(result.job_id)
        assert settled is not None
        assert settled.cost_credits == (2 if result_on_disk else 0)
        assert await server.jobs.settle_orphans() == 0
