"""Leases: a replica holds the jobs it runs while its heartbeat renews them; only a job
whose lease expired is failed and refunded, once, by whichever replica sees it first.

Two replicas share one database here (SQLite, embedded) and one injected clock, so the
test moves time instead of waiting for it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from retouch.sdk import CostModel, Health, HealthReport, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.app import RunningServer, running
from retouch.server.clock import ManualClock
from retouch.server.config import DEV_TENANT, ServerConfig
from retouch.server.errors import Unavailable
from retouch.server.jobs import JobRecord, JobState
from retouch.server.policy import Plan, PlanBook
from retouch.server.registry import LoadedProvider, ProviderRegistry
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, photo, png, read_all, read_one, square_mask

LEASE_S = 10.0
PAID = Plan("paid", credits=True, monthly_jobs=10, rate_per_s=1000, burst=1000)
OWNER = "dev/service"


def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        listen="127.0.0.1:0",
        data_dir=tmp_path,
        environment="test",
        plans=PlanBook({PAID.name: PAID}),
        tenants=(dataclasses.replace(DEV_TENANT, default_plan=PAID.name),),
        job_lease_s=LEASE_S,
        job_heartbeat_s=3.0,
        shutdown_grace_s=1.0,
    )


async def registry(fake: FakeProvider) -> ProviderRegistry:
    await fake.start({})
    found = ProviderRegistry()
    found.add(LoadedProvider(fake, fake.manifest, HealthReport(Health.HEALTHY)))
    return found


def left_behind(job_id: str, now: float, **fields: Any) -> JobRecord:
    """An inpaint of ``OWNER``'s on the ``held`` provider as a replica left it, with
    ``fields`` (its state, lease, …) set."""
    return JobRecord(
        job_id=job_id,
        owner=OWNER,
        subject="service",
        request_id="",
        fingerprint="",
        operation="inpaint",
        provider="held",
        model="fake",
        seed=1,
        created_at=now,
        updated_at=now,
        **fields,
    )


def small_inpaint() -> pb.InpaintRequest:
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=png(photo((64, 64)))),
        mask=common_pb2.ImageInput(data=png(square_mask((64, 64), (8, 8, 24, 24)))),
    )


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, RunningServer, Any]]:
    """Two replicas on one database and clock; the first's provider waits for ``release``."""
    clock = ManualClock()
    release = asyncio.Event()
    held = FakeProvider(
        "held", [Operation.INPAINT], cost=CostModel(credits_per_job=2), release=release
    )
    async with (
        running(config(tmp_path), registry=await registry(held), clock=clock) as first,
        running(
            config(tmp_path), registry=await registry(FakeProvider("idle")), clock=clock
        ) as second,
    ):
        yield first, second, (clock, release)


async def test_a_live_replicas_job_outlasts_its_first_lease_and_another_replicas_start(
    replicas: tuple[RunningServer, RunningServer, Any],
) -> None:
    first, second, (clock, release) = replicas
    await first.ledger.grant(OWNER, 10, request_id="", note="test", now=clock.now())
    async with aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        edit = image_edit_pb2_grpc.ImageEditStub(channel)
        call = edit.Inpaint(small_inpaint(), metadata=metadata())
        accepted = await read_one(call)
        assert first.jobs.replica_id != second.jobs.replica_id
        for _ in range(4):  # 24 s in all: more than twice the lease, renewed throughout
            clock.advance(LEASE_S * 0.6)
            await first.jobs.heartbeat()
            assert await second.jobs.fail_expired() == 0
        release.set()
        events = await read_all(call)
    assert events[-1].HasField("completed")
    job = await second.store.get_job(accepted.job_id)
    assert job is not None
    assert job.state is JobState.SUCCEEDED


async def test_leases_that_ran_out_during_a_store_outage_are_not_failed_at_once(
    replicas: tuple[RunningServer, RunningServer, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, (clock, release) = replicas
    await first.ledger.grant(OWNER, 10, request_id="", note="test", now=clock.now())
    now = clock.now()
    # A job of a replica that really died, beside the live one's.
    await second.store.create_or_get(
        left_behind(
            "job_orphan",
            now,
            state=JobState.RUNNING,
            replica_id="a-replica-that-died",
            lease_until=now + LEASE_S,
        )
    )
    async with aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        edit = image_edit_pb2_grpc.ImageEditStub(channel)
        call = edit.Inpaint(small_inpaint(), metadata=metadata())
        accepted = await read_one(call)

        async def unreachable(*_: object, **__: object) -> None:
            raise Unavailable("the database is unreachable", reason="DATABASE_UNAVAILABLE")

        with monkeypatch.context() as outage:
            # Neither replica can reach the store, so neither can renew, for longer than
            # a lease.
            outage.setattr(second.store, "expired_jobs", unreachable)
            clock.advance(LEASE_S * 1.5)
            with pytest.raises(Unavailable):
                await second.jobs.heartbeat()
        # The store is back: the second replica is the first to notice.
        await second.jobs.heartbeat()
        job = await second.store.get_job(accepted.job_id)
        assert job is not None
        assert job.state is JobState.RUNNING
        await first.jobs.heartbeat()  # renews its lease
        clock.advance(LEASE_S)
        await second.jobs.heartbeat()
        release.set()
        events = await read_all(call)
    assert events[-1].HasField("completed")
    orphan = await second.store.get_job("job_orphan")
    assert orphan is not None
    assert orphan.state is JobState.FAILED


@pytest.mark.parametrize("past_deadline", [False, True], ids=["lease-expired", "deadline-passed"])
async def test_an_expired_lease_is_failed_and_refunded_once(
    replicas: tuple[RunningServer, RunningServer, Any], past_deadline: bool
) -> None:
    first, second, (clock, _) = replicas
    ledger = second.ledger
    await ledger.grant(OWNER, 10, request_id="", note="test", now=clock.now())
    now = clock.now()
    # A job as a replica that then died left it: running, leased, credits held.
    orphan = left_behind(
        "job_orphan",
        now,
        state=JobState.RUNNING,
        replica_id="a-replica-that-died",
        lease_until=now + LEASE_S,
        deadline_at=now + (LEASE_S / 2 if past_deadline else 600.0),
    )
    await second.store.create_or_get(orphan)
    period = second.pipeline._policy.period()
    await ledger.reserve(
        orphan.job_id, OWNER, credits=2, period=period, quota=10, charge_credits=True, now=now
    )
    clock.advance(LEASE_S * 0.9)
    assert await first.jobs.fail_expired() + await second.jobs.fail_expired() == 0
    clock.advance(LEASE_S * 0.2)
    failed = await asyncio.gather(first.jobs.fail_expired(), second.jobs.fail_expired())
    assert sorted(failed) == [0, 1]
    job = await second.store.get_job(orphan.job_id)
    assert job is not None
    expected = (
        (JobState.CANCELLED, "DEADLINE_EXCEEDED")
        if past_deadline
        else (JobState.FAILED, "UNAVAILABLE")
    )
    assert (job.state, job.error_code) == expected
    assert job.updated_at - orphan.lease_until <= LEASE_S
    balance = await ledger.balance(OWNER, period)
    assert (balance.available, balance.held, balance.jobs_used) == (10, 0, 0)
    assert await ledger.audit(OWNER)
