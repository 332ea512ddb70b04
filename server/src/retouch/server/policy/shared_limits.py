"""Choosing the rate limiter by URL, and what the limits kept in Redis have in common:
how a replica behaves when Redis cannot be reached, and how soon it decides.

Importing this module loads no Redis client: :func:`open_rate_limiter` imports
:mod:`.redis_ratelimit` only for a Redis URL, so the embedded defaults never load it.
"""

from __future__ import annotations

from typing import Literal, get_args

from opentelemetry.metrics import Meter

from ..clock import Clock
from ..errors import Unavailable
from .ratelimit import MemoryRateLimiter, RateLimiter

FailureMode = Literal["open", "closed"]
FAILURE_MODES: tuple[str, ...] = get_args(FailureMode)
DEFAULT_TIMEOUT_S = 0.05
"""Bound on every Redis call: past it, the configured :data:`FailureMode` decides."""
RETRY_WHEN_UNAVAILABLE_S = 1.0
REDIS_SCHEMES = ("redis", "rediss", "unix")


class RateLimiterUnavailable(Unavailable):
    """Redis could not be reached and the configuration says to fail closed."""

    def __init__(self) -> None:
        super().__init__(
            "the rate limiter is unreachable, so no request can be admitted; retry shortly",
            retry_after=RETRY_WHEN_UNAVAILABLE_S,
            reason="RATE_LIMITER_UNAVAILABLE",
        )


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names Redis: ``redis://…``, ``rediss://…`` or ``unix://…``."""
    return "://" in url and url.split("://", 1)[0].lower() in REDIS_SCHEMES


def open_rate_limiter(
    url: str,
    *,
    clock: Clock,
    failure: FailureMode = "open",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    meter: Meter | None = None,
) -> RateLimiter:
    """The limiter ``url`` names: ``memory://`` (this process) or ``redis://…`` /
    ``rediss://…`` / ``unix://…`` (shared); raises ``ValueError`` for anything else."""
    if url.lower().startswith("memory://"):
        return MemoryRateLimiter(clock)
    if is_redis_url(url):
        from .redis_ratelimit import RedisRateLimiter

        return RedisRateLimiter(
            url,
            failure=failure,
            fallback=MemoryRateLimiter(clock),
            timeout_s=timeout_s,
            meter=meter,
        )
    raise ValueError(f"rate_limiter {url!r}: use memory:// or redis://host:port/db")
