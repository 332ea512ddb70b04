"""Upstream permits of hosted providers, shared by every replica.

A hosted provider allows so many calls at once to everyone holding its key, not to
each replica; a job of a ``remote`` provider therefore also holds one of its
:class:`Permits` while it runs. :class:`LocalPermits` counts them in this process
(``rate_limiter = "memory://"``); :class:`RedisPermits` keeps them in Redis beside the
rate limits, so N replicas together never exceed the limit.

In Redis each provider's permits are a sorted set of holder ids scored by lease expiry
(Redis ``TIME``). Three Lua scripts shipped beside this module take, renew and give
back a permit; taking one first drops every holder whose lease ran out, so a replica
that dies frees its permits within one lease. A holder renews its lease every third of
it while the call runs. With no permit free, the job keeps its place at the head of
its replica's queue and asks again after a bounded, growing pause.

Redis unreachable: ``rate_limiter_failure = "open"`` falls back to this replica's own
:class:`LocalPermits` (with a warning), ``"closed"`` refuses the job with UNAVAILABLE,
reason ``RATE_LIMITER_UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.resources import files
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from ..policy.redis_ratelimit import DEFAULT_TIMEOUT_S, FailureMode, RateLimiterUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "retouch:permits:"
DEFAULT_LEASE_S = 15.0
"""How long a permit outlives a holder that stopped renewing it (a dead replica)."""
FIRST_PAUSE_S = 0.005
LONGEST_PAUSE_S = 0.25
"""Bounds of the pause between two attempts at a permit while none is free."""

Sleep = Callable[[float], Awaitable[None]]


class Permits(Protocol):
    """Each provider's shared permits; a permit is taken for one holder id."""

    async def try_acquire(self, provider: str, holder: str, limit: int) -> bool:
        """Take a permit of ``provider`` (at most ``limit`` held at once) for
        ``holder``; False when all are held."""
        ...

    async def renew(self, provider: str, holder: str) -> bool:
        """Extend ``holder``'s lease; False when it no longer held a permit."""
        ...

    async def release(self, provider: str, holder: str) -> None:
        """Give ``holder``'s permit back (nothing when it held none)."""
        ...

    async def aclose(self) -> None: ...


class LocalPermits:
    """Permits counted in this process; leases never run out here."""

    def __init__(self) -> None:
        self._holders: dict[str, set[str]] = {}

    async def try_acquire(self, provider: str, holder: str, limit: int) -> bool:
        holders = self._holders.setdefault(provider, set())
        if holder in holders or len(holders) < limit:
            holders.add(holder)
            return True
        return False

    async def renew(self, provider: str, holder: str) -> bool:
        return holder in self._holders.get(provider, set())

    async def release(self, provider: str, holder: str) -> None:
        self._holders.get(provider, set()).discard(holder)

    async def aclose(self) -> None:
        return None


class _Unreachable(Exception):
    """Redis did not answer within the bound."""


def _script(name: str) -> str:
    return files(__package__).joinpath("lua", name).read_text()


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
        self._redis: Redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._acquire = self._redis.register_script(_script("acquire_permit.lua"))
        self._renew = self._redis.register_script(_script("renew_permit.lua"))
        self._release = self._redis.register_script(_script("release_permit.lua"))
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
            reply = await self._bounded(
                self._acquire(keys=[KEY_PREFIX + provider], args=[holder, limit, self._lease_ms])
            )
        except _Unreachable:
            self._fail()
            return await self._fallback.try_acquire(provider, holder, limit)
        return bool(int(reply))

    async def renew(self, provider: str, holder: str) -> bool:
        try:
            reply = await self._bounded(
                self._renew(keys=[KEY_PREFIX + provider], args=[holder, self._lease_ms])
            )
        except _Unreachable:
            return True  # unknown: the lease in Redis stands until it runs out
        return bool(int(reply))

    async def release(self, provider: str, holder: str) -> None:
        await self._fallback.release(provider, holder)
        try:
            await self._bounded(self._release(keys=[KEY_PREFIX + provider], args=[holder]))
        except _Unreachable:
            log.warning("could not give back a permit of %r: its lease will free it", provider)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _bounded(self, call: Awaitable[bytes | int]) -> bytes | int:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except ResponseError:
            raise  # Redis answered: an error in the script, not an outage
        except (RedisError, OSError, TimeoutError) as exc:
            raise _Unreachable from exc

    def _fail(self) -> None:
        if self._failure == "closed":
            raise RateLimiterUnavailable
        if not self._warned:
            self._warned = True
            log.warning(
                "Redis is unreachable: hosted providers' concurrency is limited by this "
                "replica alone (rate_limiter_failure = open) until it answers again"
            )


def open_permits(
    url: str, *, failure: FailureMode = "open", timeout_s: float = DEFAULT_TIMEOUT_S
) -> Permits:
    """The permits the ``rate_limiter`` URL names: in this process for ``memory://``,
    in Redis for ``redis://…`` / ``rediss://…`` / ``unix://…``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        return RedisPermits(url, failure=failure, timeout_s=timeout_s)
    return LocalPermits()


@contextlib.asynccontextmanager
async def permit(
    permits: Permits,
    provider: str,
    limit: int,
    *,
    lease_s: float = DEFAULT_LEASE_S,
    sleep: Sleep = asyncio.sleep,
) -> AsyncIterator[None]:
    """Hold a permit of ``provider`` for the body: wait until one is free (asking
    again after a pause that doubles up to :data:`LONGEST_PAUSE_S`), renew its lease
    every third of ``lease_s`` while the body runs, give it back after."""
    holder = uuid.uuid4().hex
    pause = FIRST_PAUSE_S
    while not await permits.try_acquire(provider, holder, limit):
        await sleep(pause)
        pause = min(LONGEST_PAUSE_S, pause * 2)
    renewing = asyncio.create_task(
        _keep_renewing(permits, provider, holder, lease_s / 3, sleep),
        name=f"renew permit of {provider}",
    )
    try:
        yield
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        await asyncio.shield(permits.release(provider, holder))


async def _keep_renewing(
    permits: Permits, provider: str, holder: str, every_s: float, sleep: Sleep
) -> None:
    while True:
        await sleep(every_s)
        if not await permits.renew(provider, holder):
            log.warning("the permit of a call to %r expired before the call ended", provider)
            return
