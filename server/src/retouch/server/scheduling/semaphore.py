"""Upstream permits of hosted providers, shared by every replica.

A hosted provider allows so many calls at once to everyone holding its key, not to
each replica; a job of a ``remote`` provider therefore also holds one of its
:class:`Permits` while it runs. :class:`LocalPermits` counts them in this process
(``rate_limiter = "memory://"``); :class:`~.redis_permits.RedisPermits` keeps them in
Redis beside the rate limits, so N replicas together never exceed the limit; that
module is imported only for a Redis URL.

A holder renews its lease every third of it while the call runs (:func:`permit`). With
no permit free, the job keeps its place at the head of its replica's queue and asks
again after a bounded, growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from ..policy.shared_limits import DEFAULT_TIMEOUT_S, FailureMode, is_redis_url

log = logging.getLogger(__name__)

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


def open_permits(
    url: str, *, failure: FailureMode = "open", timeout_s: float = DEFAULT_TIMEOUT_S
) -> Permits:
    """The permits the ``rate_limiter`` URL names: in this process for ``memory://``,
    in Redis for ``redis://…`` / ``rediss://…`` / ``unix://…``."""
    if is_redis_url(url):
        from .redis_permits import RedisPermits

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
    try:
        while not await permits.try_acquire(provider, holder, limit):
            await sleep(pause)
            pause = min(LONGEST_PAUSE_S, pause * 2)
    except asyncio.CancelledError:
        # Cancelled while Redis was answering: the permit may have been taken.
        await asyncio.shield(permits.release(provider, holder))
        raise
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
