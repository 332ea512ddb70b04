"""The RateLimiter contract, over every backend: in memory, and Redis (a real
``redis-server``, two clients standing for two replicas).

Time passes by the backend's own means: the injected clock for memory, and for Redis
by moving a bucket's last-touched stamp back (the script reads Redis's TIME, which a
test cannot move).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import error_details_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from retouch.server.clock import ManualClock
from retouch.server.policy import Bucket, MemoryRateLimiter, RateLimiter
from retouch.server.policy.redis_ratelimit import KEY_PREFIX, RedisRateLimiter
from retouch.server.policy.shared_limits import RateLimiterUnavailable, open_rate_limiter
from tests.engines.redis import started_redis

GUARD_S = 10.0
"""A cap on a call that must not hang: generous, so it fails only when it does hang."""
SLOW = 1e-6
"""A refill rate slow enough that no token comes back during a test."""


@dataclass
class Backend:
    """Two clients of one set of buckets, and a way to let time pass for a bucket."""

    name: str
    first: RateLimiter
    second: RateLimiter
    clock: ManualClock = field(default_factory=ManualClock)
    redis: aioredis.Redis | None = None

    async def age(self, bucket: Bucket, seconds: float) -> None:
        """Make ``bucket`` (and its adaptive rate) as if ``seconds`` had passed."""
        if self.redis is None:
            self.clock.advance(seconds)
            return
        for key, stamp in ((KEY_PREFIX + bucket.key, "ts"), (adaptive(bucket), "since")):
            if await self.redis.hexists(key, stamp):
                await self.redis.hincrbyfloat(key, stamp, -seconds)


def adaptive(bucket: Bucket) -> str:
    return f"{KEY_PREFIX}adaptive:{bucket.key}"


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = ManualClock()
        shared = MemoryRateLimiter(clock)
        yield Backend("memory", shared, shared, clock)
        return
    url = request.getfixturevalue("redis_url")
    # A generous bound here: these tests are about the arithmetic, and a loaded test
    # machine must not turn a slow answer into a fallback.
    first, second = (
        RedisRateLimiter(
            url, failure="closed", fallback=MemoryRateLimiter(ManualClock()), timeout_s=2
        )
        for _ in range(2)
    )
    raw = aioredis.Redis.from_url(url)
    yield Backend("redis", first, second, redis=raw)
    await raw.aclose()
    await first.aclose()
    await second.aclose()


async def test_a_bucket_gives_its_burst_then_refills_at_its_rate(backend: Backend) -> None:
    bucket = Bucket("subject:acme/user:1", rate=2, capacity=3)
    taken = [(await backend.first.acquire([bucket])).allowed for _ in range(4)]
    assert taken == [True, True, True, False]
    await backend.age(bucket, 10)
    snapshot = await backend.second.peek(bucket)
    assert snapshot.tokens == pytest.approx(3)
    assert (snapshot.capacity, snapshot.rate) == (3, 2)


async def test_retry_after_is_the_scripts_own_arithmetic(backend: Backend) -> None:
    bucket = Bucket("tenant:acme", rate=2, capacity=3)
    for _ in range(3):
        assert (await backend.first.acquire([bucket])).allowed
    refused = await backend.second.acquire([bucket])
    assert not refused.allowed
    assert refused.limiting == bucket.key
    # One token at 2/s: half a second, less what refilled since the third was taken.
    assert 0 < refused.retry_after <= 0.5
    assert refused.retry_after == pytest.approx((1 - refused.tokens) / 2)


async def test_several_buckets_are_taken_all_or_none(backend: Backend) -> None:
    roomy = Bucket("tenant:acme", rate=SLOW, capacity=5)
    tight = Bucket("subject:acme/user:1", rate=SLOW, capacity=1)
    assert (await backend.first.acquire([roomy, tight])).allowed
    refused = await backend.first.acquire([roomy, tight])
    assert not refused.allowed
    assert refused.limiting == tight.key
    # The refusal spent nothing from the bucket that had room.
    assert (await backend.second.peek(roomy)).tokens == pytest.approx(4, abs=1e-3)
    assert (await backend.second.peek(tight)).tokens == pytest.approx(0, abs=1e-3)


async def test_the_longest_wait_of_the_short_buckets_is_reported(backend: Backend) -> None:
    fast = Bucket("a", rate=10, capacity=1)
    slow = Bucket("b", rate=1, capacity=1)
    assert (await backend.first.acquire([fast, slow])).allowed
    refused = await backend.first.acquire([fast, slow])
    assert refused.limiting == "a"  # the first short bucket names the refusal
    assert 0.5 < refused.retry_after <= 1.0  # but the wait is the slow one's


async def test_all_or_none_holds_under_concurrency_across_two_clients(backend: Backend) -> None:
    shared = Bucket("tenant:acme", rate=SLOW, capacity=20)
    per_subject = [Bucket(f"subject:acme/user:{n}", rate=SLOW, capacity=5) for n in range(2)]
    clients = (backend.first, backend.second)
    decisions = await asyncio.gather(
        *(
            clients[n % 2].acquire([shared, per_subject[n % 2]])
            for n in range(40)  # 20 per subject, of which 5 each fit
        )
    )
    assert sum(d.allowed for d in decisions) == 10
    # Exactly the admitted calls took from the shared bucket: no refusal leaked one.
    assert (await backend.first.peek(shared)).tokens == pytest.approx(10, abs=1e-3)
    for bucket in per_subject:
        assert (await backend.second.peek(bucket)).tokens == pytest.approx(0, abs=1e-3)


async def test_a_dry_run_decides_without_taking(backend: Backend) -> None:
    bucket = Bucket("subject:acme/user:1", rate=SLOW, capacity=1)
    assert (await backend.first.acquire([bucket], dry_run=True)).allowed
    assert (await backend.first.acquire([bucket], dry_run=True)).allowed
    assert (await backend.first.acquire([bucket])).allowed
    assert not (await backend.first.acquire([bucket], dry_run=True)).allowed


async def test_a_throttled_rate_is_halved_for_every_client_and_recovers(
    backend: Backend,
) -> None:
    bucket = Bucket("provider:hosted", rate=1.0, capacity=1.0, adaptive=True)
    assert (await backend.second.peek(bucket)).rate == 1.0
    assert await backend.first.throttled(bucket) == pytest.approx(0.5, abs=1e-3)
    assert (await backend.second.peek(bucket)).rate == pytest.approx(0.5, abs=1e-3)
    assert await backend.second.throttled(bucket) == pytest.approx(0.25, abs=1e-3)
    await backend.age(bucket, 60)
    # 10% of the configured rate comes back per quiet minute.
    assert (await backend.first.peek(bucket)).rate == pytest.approx(0.35, abs=1e-3)
    await backend.age(bucket, 3600)
    assert (await backend.first.peek(bucket)).rate == pytest.approx(1.0, abs=1e-3)


async def test_a_throttled_bucket_refills_at_its_lowered_rate(backend: Backend) -> None:
    bucket = Bucket("provider:hosted", rate=2.0, capacity=2.0, adaptive=True)
    await backend.first.throttled(bucket)
    snapshot = await backend.second.peek(bucket)
    assert snapshot.rate == pytest.approx(1.0, abs=1e-3)
    assert snapshot.capacity == pytest.approx(1.0, abs=1e-3)
    assert (await backend.first.acquire([bucket])).allowed
    refused = await backend.second.acquire([bucket])
    assert not refused.allowed
    assert 0 < refused.retry_after <= 1.0


# --- Redis unreachable: the configured choice, decided within the bound --------------


@pytest.fixture
def stopped_redis_url() -> Iterator[str]:
    """The URL of a Redis that was running and has been stopped."""
    with started_redis() as server:
        url = server.url
        server.stop()
        yield url


async def test_fail_open_decides_locally_warns_and_counts(
    stopped_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    reader = InMemoryMetricReader()
    limiter = RedisRateLimiter(
        stopped_redis_url,
        failure="open",
        fallback=MemoryRateLimiter(ManualClock()),
        meter=MeterProvider(metric_readers=[reader]).get_meter("test"),
    )
    bucket = Bucket("subject:acme/user:1", rate=SLOW, capacity=2)
    with caplog.at_level(logging.WARNING):
        async with asyncio.timeout(GUARD_S):
            decisions = [(await limiter.acquire([bucket])).allowed for _ in range(3)]
    await limiter.aclose()
    assert decisions == [True, True, False], "the local bucket still limits"
    assert [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert fallbacks(reader) == 3


def fallbacks(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    assert data is not None
    total = 0
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "retouch.rate_limiter.fallbacks":
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint)
                        total += int(point.value)
    return total


async def test_fail_closed_is_unavailable_with_a_reason_and_retry_info(
    stopped_redis_url: str,
) -> None:
    limiter = open_rate_limiter(stopped_redis_url, clock=ManualClock(), failure="closed")
    with pytest.raises(RateLimiterUnavailable) as refused:
        async with asyncio.timeout(GUARD_S):
            await limiter.acquire([Bucket("subject:acme/user:1", rate=1, capacity=1)])
    await limiter.aclose()
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    info, retry = refused.value.details()
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "RATE_LIMITER_UNAVAILABLE"
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds + retry.retry_delay.nanos > 0


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never answers: a Redis that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("failure", ["open", "closed"])
async def test_a_hung_redis_is_decided_within_the_bound(silent_port: int, failure: str) -> None:
    limiter = RedisRateLimiter(
        f"redis://127.0.0.1:{silent_port}/0",
        failure="open" if failure == "open" else "closed",
        fallback=MemoryRateLimiter(ManualClock()),
    )
    # The bound is set, not measured: 50 ms on connecting, on every read, and on the
    # whole call; the guard only turns a hang into a failure.
    assert limiter.timeout_s == 0.05
    connection = limiter._redis.connection_pool.connection_kwargs
    assert connection["socket_timeout"] == connection["socket_connect_timeout"] == 0.05
    bucket = Bucket("subject:acme/user:1", rate=1, capacity=1)
    async with asyncio.timeout(GUARD_S):
        if failure == "open":
            assert (await limiter.acquire([bucket])).allowed
        else:
            with pytest.raises(RateLimiterUnavailable):
                await limiter.acquire([bucket])
    await limiter.aclose()


def test_unknown_limiter_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="memory:// or redis://"):
        open_rate_limiter("memcached://x", clock=ManualClock())
    assert isinstance(open_rate_limiter("memory://", clock=ManualClock()), MemoryRateLimiter)
