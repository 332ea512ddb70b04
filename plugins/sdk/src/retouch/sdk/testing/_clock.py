"""Time that moves only when a test says so."""

from __future__ import annotations

import asyncio


class ManualClock:
    """A :class:`~retouch.sdk.Clock` for tests, with an async :meth:`sleep` that moves
    it instead of waiting: pass ``HttpRuntime(clock=clock, sleep=clock.sleep)`` and
    every backoff and poll interval happens at once, recorded in :attr:`sleeps`."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._monotonic = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both times forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
        self._monotonic += seconds

    async def sleep(self, seconds: float) -> None:
        """Record ``seconds``, move the clock by them, and yield to the loop once."""
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
