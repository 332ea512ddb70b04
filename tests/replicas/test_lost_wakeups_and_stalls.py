"""What a lost wake-up or a stalled replica must not break, across two replicas: a cancel
reaches its job within one heartbeat when every LISTEN connection is down, and a replica
that stalled past its lease while the other failed and refunded its job can neither
charge it, record it SUCCEEDED, nor tell anyone it succeeded.

Heartbeats run when a test calls them (the configured interval is far longer than any
test), and a stall is the replicas' shared injected clock moving past the lease."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc import aio

from retouch.sdk import CostModel, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.clock import ManualClock
from retouch.server.jobs import JobState
from retouch.server.policy import Plan
from retouch.v1 import image_edit_pb2 as pb
from tests.engines.postgres import listeners_cut
from tests.helpers import metadata, read_all, read_one
from tests.replicas.conftest import SUBJECT
from tests.replicas.test_two_replicas import fast, inpaint

LEASE_S = 100.0
HEARTBEATS_BY_HAND = {"job_lease_s": LEASE_S, "job_heartbeat_s": LEASE_S / 2}
PAID = Plan("paid", credits=True, monthly_jobs=10, rate_per_s=1e6, burst=10**6)


def held_until(release: asyncio.Event) -> FakeProvider:
    """A provider whose jobs report one step, then wait for ``release``."""
    return FakeProvider(
        "fake", [Operation.INPAINT], steps=1, cost=CostModel(credits_per_job=2), release=release
    )


async def started_and_held(r: Any) -> tuple[Any, pb.JobEvent]:
    """An Inpaint on the first replica, once its provider holds it; and its Accepted."""
    call = r.first.edit.Inpaint(inpaint(), metadata=metadata(subject=SUBJECT))
    accepted = await read_one(call)
    assert (await read_one(call)).progress.queue_position == 0  # it took the free slot
    assert (await read_one(call)).progress.stage == "step 1/1"
    return call, accepted


async def events_until_it_fails(call: Any) -> tuple[list[pb.JobEvent], aio.AioRpcError]:
    """The rest of a call's events, and the error status it ended with."""
    events: list[pb.JobEvent] = []
    try:
        async with asyncio.timeout(60):  # a guard against a hang, not a timed assertion
            while (event := await call.read()) is not aio.EOF:
                events.append(event)
    except aio.AioRpcError as error:
        return events, error
    raise AssertionError(f"the call succeeded after {events}")


async def test_a_cancel_reaches_a_job_whose_replica_lost_its_listen_connection_within_a_heartbeat(
    replicas: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = held_until(asyncio.Event())
    async with replicas(plan=PAID, first=[held], second=[fast()], **HEARTBEATS_BY_HAND) as r:
        await r.grant(10)
        call, accepted = await started_and_held(r)
        store = r.second.server.store
        requested = asyncio.Event()
        request_cancel = store.request_cancel

        async def request_and_tell(job_id: str) -> bool:
            try:
                return bool(await request_cancel(job_id))
            finally:
                requested.set()

        monkeypatch.setattr(store, "request_cancel", request_and_tell)
        async with (
            asyncio.timeout(60),  # a guard against a hang, not a timed assertion
            listeners_cut(r.config.database) as dropped,
        ):
            assert dropped == 2  # both replicas': no NOTIFY reaches either
            cancelling = asyncio.ensure_future(
                r.second.edit.CancelJob(
                    pb.CancelJobRequest(job_id=accepted.job_id), metadata=metadata(subject=SUBJECT)
                )
            )
            await requested.wait()
            assert (held.active, held.cancelled) == (1, 0)  # nobody heard it yet
            await r.first.server.jobs.heartbeat()  # one heartbeat, and the job stops
            _, ended = await events_until_it_fails(call)
            assert ended.code() == grpc.StatusCode.CANCELLED
            assert held.cancelled == 1
        # Its listener back, the replica that was asked hears the job end and answers.
        job = await asyncio.wait_for(cancelling, 60)
        assert (job.state, job.error_code, job.cost_credits) == (
            pb.JOB_STATE_CANCELLED,
            "CANCELLED",
            0,
        )
        usage = await r.usage()
        assert (usage.credits_balance, usage.credits_reserved, usage.quota_used) == (10, 0, 0)


@pytest.mark.parametrize("learns_by", ["finishing", "heartbeat"])
async def test_a_stalled_replica_never_succeeds_nor_charges_a_job_the_other_failed(
    replicas: Any, learns_by: str
) -> None:
    """The stalled replica learns it lost the job either when it tries to record the
    success, or earlier, when its heartbeat finds the lease gone and stops the job."""
    clock = ManualClock()
    release = asyncio.Event()
    held = held_until(release)
    async with replicas(
        plan=PAID, first=[held], second=[fast()], clock=clock, **HEARTBEATS_BY_HAND
    ) as r:
        await r.grant(10)
        call, accepted = await started_and_held(r)
        assert accepted.accepted.estimated_cost_credits == 2
        clock.advance(LEASE_S + 1)  # the first replica stalls: no renewal for a lease
        assert await r.second.server.jobs.fail_expired() == 1
        watch = r.second.edit.WatchJob(
            pb.WatchJobRequest(job_id=accepted.job_id), metadata=metadata(subject=SUBJECT)
        )
        if learns_by == "heartbeat":
            await r.first.server.jobs.heartbeat()
        else:
            release.set()  # the stall ends, and the provider returns its image
        events, ended = await events_until_it_fails(call)
        assert not any(e.HasField("completed") for e in events)
        assert ended.code() == grpc.StatusCode.UNAVAILABLE
        assert held.cancelled == (1 if learns_by == "heartbeat" else 0)
        store = r.second.server.store
        job = await store.get_job(accepted.job_id)
        assert job is not None
        assert (job.state, job.error_code, job.result_id, job.cost_credits) == (
            JobState.FAILED,
            "UNAVAILABLE",
            "",
            0,
        )
        assert job.error_message == ended.details()  # the stream ended as the store says
        assert job.replica_id == r.first.server.jobs.replica_id
        recorded = [pb.JobEvent.FromString(e) for e in await store.events_after(job.job_id, 0)]
        assert not any(e.HasField("completed") for e in recorded)
        with pytest.raises(aio.AioRpcError) as watched:
            await read_all(watch)
        assert watched.value.code() == grpc.StatusCode.UNAVAILABLE
        usage = await r.usage()
        assert (usage.credits_balance, usage.credits_reserved, usage.quota_used) == (10, 0, 0)
        assert await r.first.server.ledger.audit(f"dev/{SUBJECT}")
