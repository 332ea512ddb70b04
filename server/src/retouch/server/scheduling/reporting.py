"""A waiting job's place, told to its followers: every change, coalesced so that a busy
queue sends each follower at most a few updates a second, the latest one always."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .queue import QueuePlace

MIN_INTERVAL_S = 0.25
"""Least time between two updates of one job's place."""


class PlaceReporter:
    """Call it with each new place (it is a :data:`~.queue.PlaceListener`); :meth:`run`
    publishes them until :meth:`stop`."""

    def __init__(
        self,
        publish: Callable[[QueuePlace], None],
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        self._publish = publish
        self._min_interval_s = min_interval_s
        self._latest: QueuePlace | None = None
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()

    def __call__(self, place: QueuePlace) -> None:
        self._latest = place
        self._changed.set()

    def stop(self) -> None:
        """Publish no more; :meth:`run` returns."""
        self._stopping.set()
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._stopping.is_set() or self._latest is None:
                return
            self._publish(self._latest)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._min_interval_s)
