"""When a waiting job should start, from how long a provider's recent jobs held a slot."""

from __future__ import annotations

import math

DEFAULT_SERVICE_S = 1.0
"""Assumed time per job until a provider has finished one."""
SMOOTHING = 0.2
"""Weight of the newest job in the moving average."""


class ServiceTimes:
    """An exponentially weighted average of each provider's time per job."""

    def __init__(self, default_s: float = DEFAULT_SERVICE_S) -> None:
        self._default_s = default_s
        self._average: dict[str, float] = {}

    def record(self, provider: str, seconds: float) -> None:
        previous = self._average.get(provider)
        seconds = max(0.0, seconds)
        self._average[provider] = (
            seconds if previous is None else previous + SMOOTHING * (seconds - previous)
        )

    def per_job(self, provider: str) -> float:
        return self._average.get(provider, self._default_s)

    def wait(self, provider: str, position: int, capacity: int) -> float:
        """Seconds until the job with ``position`` jobs ahead of it in the queue starts,
        when ``capacity`` jobs run at once and all slots are busy."""
        return math.ceil((position + 1) / capacity) * self.per_job(provider)
