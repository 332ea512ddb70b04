"""Deleting what has outlived its time: results past their plan's retention."""

from __future__ import annotations

import logging

from .clock import Clock
from .jobs.store import JobStore
from .storage import ObjectStore

log = logging.getLogger(__name__)


class ResultRetention:
    """Deletes results (object and record) once their plan's retention has ended."""

    def __init__(self, store: JobStore, objects: ObjectStore, clock: Clock) -> None:
        self._store = store
        self._objects = objects
        self._clock = clock

    async def sweep(self) -> int:
        """Delete expired results; returns how many. A deleted result is NOT_FOUND."""
        expired = await self._store.expired_results(self._clock.now())
        for result in expired:
            await self._objects.delete(result.object_key)
            await self._store.delete_result(result.result_id)
        if expired:
            log.info("deleted %d result(s) past their retention", len(expired))
        return len(expired)
