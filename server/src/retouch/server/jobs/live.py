"""A running job's events, fanned out to every stream that follows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from google.rpc import status_pb2

from retouch.v1 import image_edit_pb2 as pb

from ..errors import RetouchError


class LiveJob:
    """Events of a job that runs in this process.

    Followers replay what happened so far and then wait for more; a follower that
    attaches late or reads slowly never blocks the job, since events are kept in a list
    rather than pushed into per-follower queues.
    """

    def __init__(self, job_id: str, owner: str) -> None:
        self.job_id = job_id
        self.owner = owner
        self.events: list[pb.JobEvent] = []
        self.final_status: status_pb2.Status | None = None
        self.inline_data: bytes | None = None
        self.task: asyncio.Task[None] | None = None
        self.cancel_reason: RetouchError | None = None
        self._changed = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self.final_status is not None

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def publish(self, event: pb.JobEvent) -> None:
        """Append an event (its ``seq`` must be the next one) and wake followers."""
        self.events.append(event)
        self._wake()

    def finish(self, status: status_pb2.Status) -> None:
        """Record the job's final status (code 0 for success) and wake followers."""
        self.final_status = status
        self._wake()

    def cancel(self, reason: RetouchError) -> bool:
        """Ask the job's task to stop; ``reason`` becomes its final status."""
        if self.finished or self.task is None or self.task.done():
            return False
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.task.cancel(reason.message)
        return True

    async def follow(self, after_seq: int = 0) -> AsyncIterator[pb.JobEvent]:
        """Events with seq > ``after_seq``, live until the job finishes."""
        index = after_seq
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.finished:
                return
            changed = self._changed
            await changed.wait()

    async def wait_finished(self) -> status_pb2.Status:
        while self.final_status is None:
            await self._changed.wait()
        return self.final_status

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
