"""In-process wake-ups for job watchers and cancel requests.

The job stores feed these: SQLite directly after each write (one process, one replica),
PostgreSQL from its LISTEN connection, so watchers in every replica wake.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator


class Signals:
    """Per-job "something changed" wake-ups and a stream of cancel requests."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._cancel_queues: set[asyncio.Queue[str]] = set()

    def job_changed(self, job_id: str) -> None:
        """Wake every watcher of ``job_id``."""
        for event in self._watchers.get(job_id, ()):
            event.set()

    def everything_changed(self) -> None:
        """Wake every watcher: wake-ups may have been lost (a dropped LISTEN connection)."""
        for events in self._watchers.values():
            for event in events:
                event.set()

    def cancel_requested(self, job_id: str) -> None:
        """Tell every cancel-request stream about ``job_id``."""
        for queue in self._cancel_queues:
            queue.put_nowait(job_id)

    async def watch(self, job_id: str) -> AsyncGenerator[None, None]:
        """Yield once at once, then once per burst of changes to ``job_id``.

        Registered before the first yield, so a change made after the caller reads the
        job's state is never missed; bursts coalesce, since the caller re-reads anyway.
        """
        event = asyncio.Event()
        watchers = self._watchers.setdefault(job_id, set())
        watchers.add(event)
        try:
            while True:
                yield
                await event.wait()
                event.clear()
        finally:
            watchers.discard(event)
            if not watchers and self._watchers.get(job_id) is watchers:
                del self._watchers[job_id]

    async def cancels(self) -> AsyncGenerator[str, None]:
        """Job ids whose cancellation is requested from the first ``__anext__`` on."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._cancel_queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._cancel_queues.discard(queue)
