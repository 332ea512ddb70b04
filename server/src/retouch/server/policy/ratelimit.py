"""Token buckets: per subject, per tenant, and per provider for its upstream limit.

Buckets live behind :class:`RateLimiter`, selected by ``rate_limiter = "memory://"``
(in this process, the default) or ``"redis://host:port/db"`` (shared by every replica;
see :mod:`.redis_ratelimit`). Several buckets are taken in one call, atomically: from
all of them or from none, so a refusal by one bucket never spends another's token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..clock import Clock

RECOVERY_PER_MINUTE = 0.10
"""An adaptive rate climbs back by this fraction of its configured rate per minute."""
FLOOR = 0.05
"""An adaptive rate never drops below this fraction of its configured rate."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One token bucket to take from: ``rate`` tokens per second up to ``capacity``.

    An ``adaptive`` bucket's rate (and capacity, in proportion) is scaled down by the
    adaptive state kept under its key, which :meth:`RateLimiter.throttled` halves.
    """

    key: str
    rate: float
    capacity: float
    cost: float = 1.0
    adaptive: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of taking tokens: allowed, or when to retry and which bucket said no.

    ``tokens`` is what the refusing bucket holds (or, when allowed, the fewest any
    bucket holds afterwards)."""

    allowed: bool
    retry_after: float = 0.0
    tokens: float = 0.0
    limiting: str = ""


@dataclass(frozen=True, slots=True)
class BucketSnapshot:
    """A bucket's state, for GetUsage."""

    key: str
    capacity: float
    tokens: float
    rate: float


class RateLimiter(Protocol):
    """Token buckets by key, shared by whoever uses the same backend."""

    async def acquire(self, buckets: Sequence[Bucket], *, dry_run: bool = False) -> Decision:
        """Take each bucket's ``cost`` from every bucket, or from none when any one is
        short (never going negative). A refusal's ``retry_after`` is the longest any
        short bucket needs; ``dry_run`` decides the same way but takes nothing."""
        ...

    async def peek(self, bucket: Bucket) -> BucketSnapshot:
        """The bucket's level now, refilled, at its current (adaptive) rate."""
        ...

    async def throttled(self, bucket: Bucket) -> float:
        """Halve an adaptive bucket's rate (never below :data:`FLOOR` of it), after
        the upstream said "too many requests"; returns the new rate."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class _Level:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class MemoryRateLimiter:
    """Buckets in this process: exact for one replica, and free of any I/O.

    No method awaits anything, so on one event loop each call is atomic.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._levels: dict[str, _Level] = {}
        self._adaptive: dict[str, AdaptiveRate] = {}

    def _shape(self, bucket: Bucket) -> tuple[float, float]:
        adaptive = self._adaptive.get(bucket.key) if bucket.adaptive else None
        if adaptive is None or adaptive.configured != bucket.rate:
            return bucket.rate, bucket.capacity
        current = adaptive.current
        return current, max(1.0, bucket.capacity * current / bucket.rate)

    def _refill(self, bucket: Bucket) -> tuple[_Level, float, float]:
        rate, capacity = self._shape(bucket)
        now = self._clock.monotonic()
        level = self._levels.get(bucket.key)
        if level is None:
            level = self._levels[bucket.key] = _Level(capacity, now)
        else:
            elapsed = max(0.0, now - level.updated)
            level.tokens = min(capacity, level.tokens + elapsed * rate)
            level.updated = now
        return level, rate, capacity

    async def acquire(self, buckets: Sequence[Bucket], *, dry_run: bool = False) -> Decision:
        refilled = [(bucket, *self._refill(bucket)) for bucket in buckets]
        short = [(b, level, rate) for b, level, rate, _ in refilled if level.tokens < b.cost]
        if short:
            bucket, level, _ = short[0]
            wait = max((b.cost - lv.tokens) / rate for b, lv, rate in short)
            return Decision(False, wait, level.tokens, bucket.key)
        if not dry_run:
            for bucket, level, _, _ in refilled:
                level.tokens -= bucket.cost
        fewest = min((level.tokens for _, level, _, _ in refilled), default=0.0)
        return Decision(True, 0.0, fewest)

    async def peek(self, bucket: Bucket) -> BucketSnapshot:
        level, rate, capacity = self._refill(bucket)
        return BucketSnapshot(bucket.key, capacity, level.tokens, rate)

    async def throttled(self, bucket: Bucket) -> float:
        adaptive = self._adaptive.get(bucket.key)
        if adaptive is None or adaptive.configured != bucket.rate:
            adaptive = self._adaptive[bucket.key] = AdaptiveRate(bucket.rate, self._clock)
        adaptive.throttled()
        return adaptive.current

    async def aclose(self) -> None:
        """Nothing to release."""


class AdaptiveRate:
    """A provider's upstream rate that halves when the provider says "too many
    requests" and climbs back by 10% of its configured rate per minute of quiet."""

    RECOVERY_PER_MINUTE = RECOVERY_PER_MINUTE
    FLOOR = FLOOR

    def __init__(self, configured: float, clock: Clock) -> None:
        self.configured = configured
        self._clock = clock
        self._current = configured
        self._since = clock.monotonic()

    @property
    def current(self) -> float:
        minutes = (self._clock.monotonic() - self._since) / 60.0
        recovered = self._current + self.configured * self.RECOVERY_PER_MINUTE * minutes
        return min(self.configured, recovered)

    def throttled(self) -> None:
        self._current = max(self.configured * self.FLOOR, self.current / 2)
        self._since = self._clock.monotonic()
