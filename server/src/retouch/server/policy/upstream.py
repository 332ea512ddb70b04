"""Each provider's upstream rate limit, kept by a token bucket whose rate adapts:
halved when the provider reports "too many requests", recovering slowly after.

The adaptive rate lives in the :class:`RateLimiter` beside the bucket, so with Redis
a 429 seen by one replica slows every replica.
"""

from __future__ import annotations

from ..registry import ProviderRegistry
from .ratelimit import Bucket, BucketSnapshot, RateLimiter

BURST_SECONDS = 1.0
"""Bucket capacity in seconds of the provider's rate (at least one request)."""


class UpstreamLimits:
    """Token buckets for providers whose manifest declares ``requests_per_minute``."""

    def __init__(self, limiter: RateLimiter, registry: ProviderRegistry) -> None:
        self._limiter = limiter
        self._buckets = {
            name: _bucket(name, loaded.manifest.requests_per_minute / 60.0)
            for name, loaded in registry.providers.items()
            if loaded.manifest.requests_per_minute
        }

    def bucket(self, provider: str) -> Bucket | None:
        """The provider's upstream bucket, or None when it declares no limit."""
        return self._buckets.get(provider)

    async def waits(self) -> dict[str, float]:
        """Seconds until each limited provider can take a call (0 when it can now)."""
        waits = {}
        for provider, bucket in self._buckets.items():
            snapshot = await self._limiter.peek(bucket)
            waits[provider] = 0.0 if snapshot.tokens >= 1 else (1 - snapshot.tokens) / snapshot.rate
        return waits

    async def acquire(self, provider: str) -> float:
        """Take a token for one call; returns 0, or the seconds to wait when none is left."""
        bucket = self._buckets.get(provider)
        if bucket is None:
            return 0.0
        decision = await self._limiter.acquire([bucket])
        return 0.0 if decision.allowed else decision.retry_after

    async def throttled(self, provider: str) -> None:
        """The provider said "too many requests": halve its rate, for every replica."""
        bucket = self._buckets.get(provider)
        if bucket is not None:
            await self._limiter.throttled(bucket)

    async def snapshot(self, provider: str) -> BucketSnapshot | None:
        bucket = self._buckets.get(provider)
        return None if bucket is None else await self._limiter.peek(bucket)


def _bucket(provider: str, rate: float) -> Bucket:
    return Bucket(f"provider:{provider}", rate, max(1.0, rate * BURST_SECONDS), adaptive=True)
