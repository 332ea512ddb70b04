"""Token buckets in Redis, shared by every replica: ``rate_limiter = "redis://host:port/db"``.

One Lua script (``lua/take_tokens.lua``, loaded with SCRIPT LOAD and run with EVALSHA)
takes the tokens of several buckets atomically, all or none, and computes RetryInfo
from its own arithmetic on Redis's ``TIME``, never on the replicas' clocks. A second
(``lua/throttle.lua``) halves a provider's adaptive rate, kept in Redis beside its
bucket so that a 429 seen by one replica slows all of them.

Every call is bounded by ``timeout_s`` (50 ms by default) through the client's connect
and socket timeouts, no retries, and an overall ``asyncio.timeout``: when Redis is
unreachable the decision is made within that bound, never a hung call. Then the
configured ``failure`` applies: ``"open"`` decides with a local in-memory bucket (a
warning in the log, and the ``retouch.rate_limiter.fallbacks`` counter), ``"closed"``
refuses with UNAVAILABLE, reason ``RATE_LIMITER_UNAVAILABLE``, and RetryInfo.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from opentelemetry.metrics import Meter, NoOpMeter
from redis.asyncio import Redis

from .bounded_redis import RedisUnreachable, bounded, bounded_client, lua_script
from .ratelimit import (
    FLOOR,
    RECOVERY_PER_MINUTE,
    Bucket,
    BucketSnapshot,
    Decision,
    RateLimiter,
)
from .shared_limits import DEFAULT_TIMEOUT_S, FAILURE_MODES, FailureMode, RateLimiterUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "retouch:rl:"
WARN_EVERY_S = 60.0
"""While Redis stays down, fail-open warns at most this often (the counter counts all)."""

T = TypeVar("T")


class RedisRateLimiter:
    """A :class:`RateLimiter` on Redis; see the module docstring for its guarantees."""

    def __init__(
        self,
        url: str,
        *,
        failure: FailureMode,
        fallback: RateLimiter,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        meter: Meter | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        if failure not in FAILURE_MODES:
            raise ValueError(f"rate_limiter_failure {failure!r}: expected open or closed")
        if timeout_s <= 0:
            raise ValueError("the rate limiter's timeout must be positive")
        self._redis: Redis = bounded_client(url, timeout_s)
        self._take = self._redis.register_script(lua_script(__package__, "take_tokens.lua"))
        self._throttle = self._redis.register_script(lua_script(__package__, "throttle.lua"))
        self._failure = failure
        self._fallback = fallback
        self._timeout_s = timeout_s
        self._fallbacks = (meter or NoOpMeter("retouch")).create_counter(
            "retouch.rate_limiter.fallbacks",
            unit="{decision}",
            description="Rate-limit decisions made locally because Redis was unreachable",
        )
        self._monotonic = monotonic or time.monotonic
        self._warned_at: float | None = None

    @property
    def timeout_s(self) -> float:
        """The bound on every call to Redis, connecting included."""
        return self._timeout_s

    async def acquire(self, buckets: Sequence[Bucket], *, dry_run: bool = False) -> Decision:
        if not buckets:
            return Decision(True)
        try:
            reply = await bounded(self._run_take(buckets, dry_run=dry_run), self._timeout_s)
        except RedisUnreachable:
            return await self._fail(lambda: self._fallback.acquire(buckets, dry_run=dry_run))
        n = len(buckets)
        allowed, retry_after, limiting = bool(int(reply[0])), float(reply[1]), int(reply[2])
        tokens = [float(value) for value in reply[3 : 3 + n]]
        if allowed:
            return Decision(True, 0.0, min(tokens))
        return Decision(False, retry_after, tokens[limiting - 1], buckets[limiting - 1].key)

    async def peek(self, bucket: Bucket) -> BucketSnapshot:
        try:
            reply = await bounded(self._run_take([bucket], dry_run=True), self._timeout_s)
        except RedisUnreachable:
            return await self._fail(lambda: self._fallback.peek(bucket))
        return BucketSnapshot(bucket.key, float(reply[5]), float(reply[3]), float(reply[4]))

    async def throttled(self, bucket: Bucket) -> float:
        try:
            reply = await bounded(
                self._throttle(
                    keys=[_adaptive_key(bucket)],
                    args=[repr(bucket.rate), repr(RECOVERY_PER_MINUTE), repr(FLOOR)],
                ),
                self._timeout_s,
            )
        except RedisUnreachable:
            return await self._fail(lambda: self._fallback.throttled(bucket))
        return float(reply)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _run_take(self, buckets: Sequence[Bucket], *, dry_run: bool) -> list[bytes]:
        args = ["1" if dry_run else "0", repr(RECOVERY_PER_MINUTE), repr(FLOOR)]
        for bucket in buckets:
            args += [repr(bucket.rate), repr(bucket.capacity), repr(bucket.cost)]
            args.append("1" if bucket.adaptive else "0")
        keys = [KEY_PREFIX + b.key for b in buckets] + [_adaptive_key(b) for b in buckets]
        reply: list[bytes] = await self._take(keys=keys, args=args)
        return reply

    async def _fail(self, locally: Callable[[], Awaitable[T]]) -> T:
        if self._failure == "closed":
            raise RateLimiterUnavailable
        self._fallbacks.add(1)
        now = self._monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "Redis is unreachable: rate limits are decided by this replica alone "
                "(rate_limiter_failure = open) until it answers again"
            )
        return await locally()


def _adaptive_key(bucket: Bucket) -> str:
    return f"{KEY_PREFIX}adaptive:{bucket.key}"
