"""The scheduler between admission and the providers: one :class:`ProviderQueue` per
provider, sized by the capacity its manifest declares (or ``max_concurrency`` in its
config), and the backpressure that refuses a job before anything is reserved for it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Mapping

from ..clock import Clock
from ..routing import Candidate, Route
from . import memory
from .eta import ServiceTimes
from .queue import PlaceListener, ProviderQueue, QueueLimits, Slot
from .semaphore import LocalPermits, Permits, permit

log = logging.getLogger(__name__)

TRIM_AFTER_IDLE_S = 1.0
"""How long every queue must stay empty before the freed heap goes back to the system:
the end of a burst, not the gap between two jobs (trimming a large heap takes
milliseconds), and late enough that the last streams have let go of their results."""

DEFAULT_REMOTE_CAPACITY = 8
"""Concurrent calls to a hosted provider whose manifest and config declare none."""


def default_capacity(candidate: Candidate) -> int:
    """A provider's capacity: its manifest's, else the CPU count for a local one."""
    manifest = candidate.loaded.manifest
    if manifest.capacity is not None:
        return manifest.capacity
    return DEFAULT_REMOTE_CAPACITY if manifest.remote else os.cpu_count() or 1


class Scheduler:
    """Queues in front of every provider's capacity."""

    def __init__(
        self,
        clock: Clock,
        limits: Mapping[str, QueueLimits] | None = None,
        permits: Permits | None = None,
        *,
        trim_after_idle_s: float = TRIM_AFTER_IDLE_S,
    ) -> None:
        """``permits`` limit a hosted provider's calls across replicas (see
        :mod:`.semaphore`); in this process alone when None. ``trim_after_idle_s`` is
        how long every queue must stay empty before freed memory is handed back."""
        self._clock = clock
        self._permits = permits or LocalPermits()
        self._limits = dict(limits or {})
        self._times = ServiceTimes()
        self._queues: dict[str, ProviderQueue] = {}
        self._trim_after_idle_s = trim_after_idle_s
        self._trim_later: asyncio.TimerHandle | None = None
        self._trimming: asyncio.Task[bool] | None = None
        self._trim_again = False

    def queue(self, candidate: Candidate) -> ProviderQueue:
        """The queue of ``candidate``'s provider."""
        name = candidate.name
        queue = self._queues.get(name)
        if queue is None:
            limits = self._limits.get(name, QueueLimits())
            capacity = limits.max_concurrency or default_capacity(candidate)
            queue = ProviderQueue(
                name, capacity, limits, self._times, self._clock, on_idle=self._idle
            )
            self._queues[name] = queue
        return queue

    def _idle(self) -> None:
        """A queue drained: once every queue has stayed empty for
        :data:`TRIM_AFTER_IDLE_S`, hand the freed memory back."""
        if self._busy():
            return
        if self._trim_later is not None:
            self._trim_later.cancel()
        self._trim_later = asyncio.get_running_loop().call_later(
            self._trim_after_idle_s, self._trim_if_idle
        )

    def stream_ended(self) -> None:
        """A job's stream has ended, letting go of what it sent (a result's bytes): as
        after a drain, the freed heap goes back once every queue has stayed empty for
        ``trim_after_idle_s`` from now. The streams of a burst end well after its last
        job when their caller reads slowly, and a trim before that returned none of it."""
        self._idle()

    def _busy(self) -> bool:
        return any(queue.running or queue.waiting for queue in self._queues.values())

    def _trim_if_idle(self) -> None:
        # A job that started meanwhile re-arms the wait when its queue drains again.
        self._trim_later = None
        if self._busy():
            return
        if self._trimming is not None:
            # What was freed since that trim began may have come too late for it.
            self._trim_again = True
            return
        self._trimming = asyncio.get_running_loop().create_task(
            asyncio.to_thread(memory.trim), name="return freed memory"
        )
        self._trimming.add_done_callback(self._trimmed)

    def _trimmed(self, task: asyncio.Task[bool]) -> None:
        self._trimming = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("returning freed memory failed", exc_info=task.exception())
        if self._trim_again:
            self._trim_again = False
            self._idle()

    def choose(self, route: Route) -> Route:
        """``route`` with a provider whose queue has room first: the route's own first
        choice when it has room, else the next capable one that has (the route's notes
        say why). Raises the first choice's RESOURCE_EXHAUSTED when none has room."""
        first = route.candidates[0]
        refusal = self.queue(first).refusal()
        if refusal is None:
            return route
        for index, other in enumerate(route.candidates[1:], start=1):
            if self.queue(other).refusal() is None:
                rest = route.candidates[:index] + route.candidates[index + 1 :]
                note = (
                    f"chose {other.name!r} because {first.name!r} is at capacity: "
                    f"{refusal.message.split(': ', 1)[-1]}"
                )
                return dataclasses.replace(
                    route, candidates=[other, *rest], notes=[*route.notes, note]
                )
        raise refusal

    def claim(self, candidate: Candidate) -> Slot | None:
        """A free slot of ``candidate``'s provider taken now, or None when a job for
        it would wait (see :meth:`ProviderQueue.claim`)."""
        return self.queue(candidate).claim()

    @contextlib.asynccontextmanager
    async def slot(
        self,
        candidate: Candidate,
        *,
        tenant: str,
        subject: str,
        weight: float,
        listener: PlaceListener,
        held: Slot | None = None,
    ) -> AsyncIterator[None]:
        """Hold a slot of ``candidate``'s provider for the body, ``held`` or waited for
        (see :meth:`ProviderQueue.slot`); for a hosted provider, also one of the permits
        all replicas share, waited for at the head of this replica's queue."""
        queue = self.queue(candidate)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(
                queue.slot(
                    tenant=tenant, subject=subject, weight=weight, listener=listener, held=held
                )
            )
            if candidate.loaded.manifest.remote:
                await stack.enter_async_context(permit(self._permits, queue.name, queue.capacity))
            yield
