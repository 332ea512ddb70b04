"""A replica whose PostgreSQL goes away: every call fails UNAVAILABLE with reason
DATABASE_UNAVAILABLE and RetryInfo, within ``database_timeout_s`` when the database
hangs, charges nothing, and succeeds again once the database is back. The outage is a
proxy between the replica and the shared PostgreSQL, which stays up for other tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio

from retouch.sdk import CostModel, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.policy import Plan
from retouch.v1 import account_pb2, common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.engines.postgres import PostgresServer
from tests.engines.proxy import TcpProxy
from tests.helpers import metadata, photo, png, read_all, rpc_details, square_mask
from tests.replicas.conftest import SUBJECT, Replica, shared_config, started

TIMEOUT_S = 0.5
"""The replica's ``database_timeout_s``, lowered so the hung case is quick."""
SLACK_S = 1.0
CALL_DEADLINE_S = 10.0
"""Longer than the bound by far: a call still hanging past it fails the test."""
PLAN = Plan("monthly", monthly_jobs=10, rate_per_s=1e6, burst=10**6)


@pytest.fixture
async def proxy(postgres: PostgresServer) -> AsyncIterator[TcpProxy]:
    async with TcpProxy.running("127.0.0.1", postgres.port) as opened:
        yield opened


@pytest.fixture
async def replica(
    tmp_path: Path, postgres: PostgresServer, proxy: TcpProxy
) -> AsyncIterator[Replica]:
    url = postgres.new_database().replace(f":{postgres.port}/", f":{proxy.port}/")
    config = shared_config(
        tmp_path,
        (url, "memory://", "memory://"),
        PLAN,
        database_timeout_s=TIMEOUT_S,
    )
    fake = FakeProvider("fake", [Operation.INPAINT], steps=1, cost=CostModel(credits_per_job=1))
    async with started(config, [fake], "only") as one:
        yield one


def inpaint(replica: Replica) -> Awaitable[list[pb.JobEvent]]:
    request = pb.InpaintRequest(
        image=common_pb2.ImageInput(data=png(photo((64, 64)))),
        mask=common_pb2.ImageInput(data=png(square_mask((64, 64), (16, 16, 40, 40)))),
    )
    call = replica.edit.Inpaint(
        request, metadata=metadata(subject=SUBJECT), timeout=CALL_DEADLINE_S
    )
    return read_all(call)


def get_job(replica: Replica) -> Any:
    return replica.edit.GetJob(
        pb.GetJobRequest(job_id="job_missing"),
        metadata=metadata(subject=SUBJECT),
        timeout=CALL_DEADLINE_S,
    )


def get_usage(replica: Replica) -> Any:
    return replica.account.GetUsage(
        account_pb2.GetUsageRequest(), metadata=metadata(subject=SUBJECT), timeout=CALL_DEADLINE_S
    )


CALLS: tuple[Callable[[Replica], Awaitable[Any]], ...] = (inpaint, get_job, get_usage)


async def refused_as_unavailable(call: Awaitable[Any]) -> float:
    """Seconds, on the loop's clock, until ``call`` failed UNAVAILABLE with reason
    DATABASE_UNAVAILABLE and RetryInfo."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(aio.AioRpcError) as refused:
        await call
    took = loop.time() - began
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
    details = rpc_details(refused.value)
    reasons = [d.reason for d in details if isinstance(d, error_details_pb2.ErrorInfo)]
    assert reasons == ["DATABASE_UNAVAILABLE"]
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in details)
    return took


async def served_again(replica: Replica) -> None:
    events = await inpaint(replica)
    assert events[-1].HasField("completed")
    usage = await get_usage(replica)
    assert usage.quota_used == 1  # the refused edits charged nothing


async def test_calls_fail_unavailable_while_postgres_refuses_connections(
    replica: Replica, proxy: TcpProxy
) -> None:
    proxy.switch("down")
    for call in CALLS:
        await refused_as_unavailable(call(replica))
    proxy.switch("forward")
    await served_again(replica)


async def test_calls_fail_unavailable_within_the_bound_while_postgres_hangs(
    replica: Replica, proxy: TcpProxy
) -> None:
    await get_usage(replica)  # the pool's connections are open, and about to hang
    proxy.switch("hung")
    for call in CALLS:
        took = await refused_as_unavailable(call(replica))
        assert took < TIMEOUT_S + SLACK_S, f"{call.__name__} took {took:.2f} s"
    proxy.switch("forward")
    await served_again(replica)
