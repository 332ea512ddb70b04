"""The contract of hosted providers' shared permits, over both implementations: in this
process and in a real Redis (two clients, as two replicas would be)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import cast

import pytest
import redis

from retouch.server.policy.shared_limits import RateLimiterUnavailable
from retouch.server.scheduling.redis_permits import KEY_PREFIX, RedisPermits
from retouch.server.scheduling.semaphore import LocalPermits, Permits, permit
from tests.engines.redis import started_redis

LIMIT = 3
ANSWER_WITHIN_S = 2.0
"""A generous bound on Redis here: these tests are about the permits, and a loaded test
machine must not turn a slow answer into RATE_LIMITER_UNAVAILABLE (the production
bound is tested against a Redis that does not answer)."""


@pytest.fixture(params=["memory", "redis"])
async def two_clients(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Permits, Permits]]:
    """Two handles on one set of permits."""
    if request.param == "memory":
        shared = LocalPermits()
        yield shared, shared
        return
    url = request.getfixturevalue("redis_url")
    first, second = (
        RedisPermits(url, failure="closed", timeout_s=ANSWER_WITHIN_S) for _ in range(2)
    )
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_never_more_than_the_limit_hold_permits_at_once(
    two_clients: tuple[Permits, Permits],
) -> None:
    holding = 0
    most = 0
    entered = 0
    changed = asyncio.Condition()
    gate: asyncio.Queue[None] = asyncio.Queue()

    async def call(permits: Permits) -> None:
        nonlocal holding, most, entered
        try:
            async with permit(permits, "hosted", LIMIT):
                holding += 1
                most = max(most, holding)
                async with changed:
                    entered += 1
                    changed.notify_all()
                await gate.get()
                holding -= 1
        finally:
            async with changed:
                changed.notify_all()  # a call that failed ends the wait below

    def failed() -> BaseException | None:
        done = [c for c in calls if c.done() and not c.cancelled()]
        return next((error for c in done if (error := c.exception()) is not None), None)

    async def until_entered(count: int) -> None:
        async with changed:
            await changed.wait_for(lambda: entered >= count or failed() is not None)
        if (error := failed()) is not None:
            raise error

    calls = [asyncio.create_task(call(two_clients[i % 2])) for i in range(12)]
    await until_entered(LIMIT)
    assert holding == LIMIT
    for count in range(LIMIT + 1, 13):
        gate.put_nowait(None)
        await until_entered(count)
        assert holding <= LIMIT
    for _ in range(LIMIT):
        gate.put_nowait(None)
    await asyncio.gather(*calls)
    assert most == LIMIT
    assert await two_clients[0].try_acquire("hosted", "after", LIMIT)


async def test_a_released_permit_is_taken_by_the_other_client(
    two_clients: tuple[Permits, Permits],
) -> None:
    first, second = two_clients
    assert await first.try_acquire("hosted", "a", 1)
    assert await first.try_acquire("hosted", "a", 1)  # taking it again is no second one
    assert not await second.try_acquire("hosted", "b", 1)
    assert await first.renew("hosted", "a")
    await first.release("hosted", "a")
    assert not await first.renew("hosted", "a")
    assert await second.try_acquire("hosted", "b", 1)
    assert await first.try_acquire("other", "a", 1)  # each provider has its own


async def test_a_job_cancelled_while_waiting_for_a_permit_holds_none(
    two_clients: tuple[Permits, Permits],
) -> None:
    first, second = two_clients
    assert await first.try_acquire("hosted", "a", 1)
    waiting = asyncio.Event()

    async def sleep(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()  # until cancelled

    async def call() -> None:
        async with permit(second, "hosted", 1, sleep=sleep):
            pytest.fail("the only permit is held")

    task = asyncio.create_task(call())
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.release("hosted", "a")
    assert await first.try_acquire("hosted", "b", 1)
    assert not await second.try_acquire("hosted", "c", 1)


# --- Redis only: leases --------------------------------------------------------------


def _expire(url: str, provider: str, holder: str) -> None:
    """Make ``holder``'s lease one that ran out long ago, as a dead replica's would."""
    client = redis.Redis.from_url(url)
    try:
        client.zadd(KEY_PREFIX + provider, {holder: 1}, xx=True)
    finally:
        client.close()


async def test_an_expired_lease_is_reclaimed_by_the_next_acquire(redis_url: str) -> None:
    dead, alive = (
        RedisPermits(redis_url, failure="closed", timeout_s=ANSWER_WITHIN_S) for _ in range(2)
    )
    try:
        assert await dead.try_acquire("hosted", "dead-1", 2)
        assert await dead.try_acquire("hosted", "dead-2", 2)
        assert not await alive.try_acquire("hosted", "new", 2)
        _expire(redis_url, "hosted", "dead-1")
        assert await alive.try_acquire("hosted", "new", 2)
        assert not await dead.renew("hosted", "dead-1")  # its lease is gone for good
        assert await dead.renew("hosted", "dead-2")
        assert not await alive.try_acquire("hosted", "newer", 2)
    finally:
        await dead.aclose()
        await alive.aclose()


async def test_a_holder_renews_its_lease_while_the_body_runs(redis_url: str) -> None:
    permits = RedisPermits(redis_url, failure="closed", lease_s=30.0, timeout_s=ANSWER_WITHIN_S)
    client = redis.Redis.from_url(redis_url)
    key = KEY_PREFIX + "hosted"
    paused: asyncio.Queue[float] = asyncio.Queue()
    wake: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(seconds: float) -> None:
        paused.put_nowait(seconds)
        await wake.get()

    try:
        async with permit(permits, "hosted", 1, lease_s=30.0, sleep=sleep):
            assert await paused.get() == 10.0  # a third of the lease
            [(holder, expiry)] = cast(
                "list[tuple[bytes, float]]", client.zrange(key, 0, -1, withscores=True)
            )
            client.zadd(key, {holder: expiry - 20_000}, xx=True)  # 10 s left, not 30
            wake.put_nowait(None)
            assert await paused.get() == 10.0  # renewed, and waiting for the next turn
            renewed: float | None = client.zscore(key, holder)
            assert renewed is not None
            assert renewed >= expiry
        assert client.zcard(key) == 0
    finally:
        client.close()
        await permits.aclose()


# --- Redis unreachable ---------------------------------------------------------------


@pytest.fixture
def stopped_redis_url() -> Iterator[str]:
    with started_redis() as server:
        url = server.url
        server.stop()
        yield url


async def test_fail_open_limits_this_replica_alone_and_warns(
    stopped_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    permits = RedisPermits(stopped_redis_url, failure="open")
    try:
        with caplog.at_level(logging.WARNING):
            assert await permits.try_acquire("hosted", "a", 1)
            assert not await permits.try_acquire("hosted", "b", 1)
        assert "rate_limiter_failure = open" in caplog.text
        await permits.release("hosted", "a")
        assert await permits.try_acquire("hosted", "b", 1)
    finally:
        await permits.aclose()


async def test_fail_closed_refuses_with_rate_limiter_unavailable(stopped_redis_url: str) -> None:
    permits = RedisPermits(stopped_redis_url, failure="closed")
    try:
        with pytest.raises(RateLimiterUnavailable) as refused:
            async with permit(permits, "hosted", 1):
                pytest.fail("no permit may be granted without Redis")
        assert refused.value.reason == "RATE_LIMITER_UNAVAILABLE"
    finally:
        await permits.aclose()
