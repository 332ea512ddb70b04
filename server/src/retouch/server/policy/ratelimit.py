"""Token buckets: per subject, per tenant, and per provider for its upstream limit.

Buckets live behind :class:`RateLimiter` so that the in-process default can be swapped
for a shared store (Redis) without touching callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..clock import Clock


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of taking a token: allowed, or when to retry."""

    allowed: bool
    retry_after: float = 0.0
    tokens: float = 0.0


@dataclass(frozen=True, slots=True)
class BucketSnapshot:
    """A bucket's state, for GetUsage."""

    key: str
    capacity: float
    tokens: float
    rate: float


class RateLimiter(Protocol):
    """Token buckets by key. ``rate`` is tokens per second, ``capacity`` the burst."""

    async def acquire(
        self, key: str, *, rate: float, capacity: float, cost: float = 1.0
    ) -> Decision:
        """Take ``cost`` tokens if there are enough; never goes negative."""

    async def peek(self, key: str, *, rate: float, capacity: float) -> BucketSnapshot: ...


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class MemoryRateLimiter:
    """Buckets in this process: exact for one replica, and free of any I/O."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _refill(self, key: str, rate: float, capacity: float) -> _Bucket:
        now = self._clock.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(capacity, bucket.tokens + elapsed * rate)
            bucket.updated = now
        return bucket

    async def acquire(
        self, key: str, *, rate: float, capacity: float, cost: float = 1.0
    ) -> Decision:
        bucket = self._refill(key, rate, capacity)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return Decision(True, 0.0, bucket.tokens)
        return Decision(False, (cost - bucket.tokens) / rate, bucket.tokens)

    async def peek(self, key: str, *, rate: float, capacity: float) -> BucketSnapshot:
        bucket = self._refill(key, rate, capacity)
        return BucketSnapshot(key, capacity, bucket.tokens, rate)


class AdaptiveRate:
    """A provider's upstream rate that halves when the provider says "too many
    requests" and climbs back by 10% of its configured rate per minute of quiet."""

    RECOVERY_PER_MINUTE = 0.10
    FLOOR = 0.05

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
