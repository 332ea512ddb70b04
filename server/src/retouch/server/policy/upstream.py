"""Each provider's upstream rate limit, kept by a token bucket whose rate adapts:
halved when the provider reports "too many requests", recovering slowly after."""

from __future__ import annotations

from ..clock import Clock
from ..registry import ProviderRegistry
from .ratelimit import AdaptiveRate, BucketSnapshot, RateLimiter

BURST_SECONDS = 1.0
"""Bucket capacity in seconds of the provider's rate (at least one request)."""


class UpstreamLimits:
    """Token buckets for providers whose manifest declares ``requests_per_minute``."""

    def __init__(self, limiter: RateLimiter, registry: ProviderRegistry, clock: Clock) -> None:
        self._limiter = limiter
        self._rates = {
            name: AdaptiveRate(loaded.manifest.requests_per_minute / 60.0, clock)
            for name, loaded in registry.providers.items()
            if loaded.manifest.requests_per_minute
        }

    def _shape(self, provider: str) -> tuple[float, float] | None:
        rate = self._rates.get(provider)
        if rate is None:
            return None
        current = rate.current
        return current, max(1.0, current * BURST_SECONDS)

    async def waits(self) -> dict[str, float]:
        """Seconds until each limited provider can take a call (0 when it can now)."""
        waits = {}
        for provider in self._rates:
            snapshot = await self.snapshot(provider)
            assert snapshot is not None
            waits[provider] = 0.0 if snapshot.tokens >= 1 else (1 - snapshot.tokens) / snapshot.rate
        return waits

    async def acquire(self, provider: str) -> float:
        """Take a token for one call; returns 0, or the seconds to wait when none is left."""
        shape = self._shape(provider)
        if shape is None:
            return 0.0
        rate, capacity = shape
        decision = await self._limiter.acquire(f"provider:{provider}", rate=rate, capacity=capacity)
        return 0.0 if decision.allowed else decision.retry_after

    def throttled(self, provider: str) -> None:
        rate = self._rates.get(provider)
        if rate is not None:
            rate.throttled()

    async def snapshot(self, provider: str) -> BucketSnapshot | None:
        shape = self._shape(provider)
        if shape is None:
            return None
        rate, capacity = shape
        return await self._limiter.peek(f"provider:{provider}", rate=rate, capacity=capacity)
