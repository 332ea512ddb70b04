"""Upstream permits of hosted providers kept in Redis, shared by every replica.

Each provider's permits are a sorted set of holder ids scored by lease expiry (Redis
``TIME``). Three Lua scripts shipped beside this module take, renew and give back a
permit; taking one first drops every holder whose lease ran out, so a replica that
dies frees its permits within one lease.

Redis unreachable: ``rate_limiter_failure = "open"`` falls back to this replica's own
:class:`~.semaphore.LocalPermits` (with a warning), ``"closed"`` refuses the job with
UNAVAILABLE, reason ``RATE_LIMITER_UNAVAILABLE``.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from ..policy.bounded_redis import RedisUnreachable, bounded, bounded_client, lua_script
from ..policy.shared_limits import DEFAULT_TIMEOUT_S, FailureMode, RateLimiterUnavailable
from .semaphore import DEFAULT_LEASE_S, LocalPermits

log = logging.getLogger(__name__)

KEY_PREFIX = "retouch:permits:"


class RedisPermits:
    """Permits in Redis, shared by every replica; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        failure: FailureMode,
        lease_s: float = DEFAULT_LEASE_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if lease_s <= 0 or timeout_s <= 0:
            raise ValueError("a permit's lease and the Redis timeout must be positive")
        self._redis: Redis = bounded_client(url, timeout_s)
        self._acquire = self._redis.register_script(lua_script(__package__, "acquire_permit.lua"))
        self._renew = self._redis.register_script(lua_script(__package__, "renew_permit.lua"))
        self._release = self._redis.register_script(lua_script(__package__, "release_permit.lua"))
        self._failure = failure
        self._fallback = LocalPermits()
        self._lease_ms = max(1, round(lease_s * 1000))
        self._timeout_s = timeout_s
        self._warned = False

    @property
    def lease_s(self) -> float:
        return self._lease_ms / 1000

    async def try_acquire(self, provider: str, holder: str, limit: int) -> bool:
        try:
            reply = await bounded(
                self._acquire(keys=[KEY_PREFIX + provider], args=[holder, limit, self._lease_ms]),
                self._timeout_s,
            )
        except RedisUnreachable:
            self._fail()
            return await self._fallback.try_acquire(provider, holder, limit)
        self._warned = False  # Redis answers again: warn again at its next outage
        return bool(int(reply))

    async def renew(self, provider: str, holder: str) -> bool:
        try:
            reply = await bounded(
                self._renew(keys=[KEY_PREFIX + provider], args=[holder, self._lease_ms]),
                self._timeout_s,
            )
        except RedisUnreachable:
            return True  # unknown: the lease in Redis stands until it runs out
        return bool(int(reply))

    async def release(self, provider: str, holder: str) -> None:
        await self._fallback.release(provider, holder)
        try:
            release = self._release(keys=[KEY_PREFIX + provider], args=[holder])
            await bounded(release, self._timeout_s)
        except RedisUnreachable:
            log.warning("could not give back a permit of %r: its lease will free it", provider)

    async def aclose(self) -> None:
        await self._redis.aclose()

    def _fail(self) -> None:
        if self._failure == "closed":
            raise RateLimiterUnavailable
        if not self._warned:
            self._warned = True
            log.warning(
                "Redis is unreachable: hosted providers' concurrency is limited by this "
                "replica alone (rate_limiter_failure = open) until it answers again"
            )
