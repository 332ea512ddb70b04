"""A provider's capacity and the jobs waiting for it.

A job holds one of a provider's slots while it decodes, runs and encodes; beyond the
provider's capacity jobs wait here, in :mod:`fair order <.fairness>`, holding only
their encoded input. A freed slot passes straight to the next waiting job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..clock import Clock
from ..errors import QuotaViolation, ResourceExhausted
from .eta import ServiceTimes
from .fairness import FairQueue

DEFAULT_MAX_QUEUE = 256
"""Jobs that may wait for one provider when its config sets no ``max_queue``."""


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A provider's queue settings, from ``[providers.<name>]``: ``max_concurrency``
    (overrides the capacity its manifest declares), ``max_queue`` and ``max_wait_s``."""

    max_concurrency: int | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    max_wait_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be 0 or more")
        if self.max_wait_s is not None and self.max_wait_s <= 0:
            raise ValueError("max_wait_s must be positive")


@dataclass(frozen=True, slots=True)
class QueuePlace:
    """Where a waiting job stands: how many jobs wait ahead of it, and when it should
    start (wall time, seconds since the epoch)."""

    position: int
    estimated_start: float


PlaceListener = Callable[[QueuePlace], None]


@dataclass(eq=False, slots=True)
class _Waiter:
    granted: asyncio.Future[None]
    listener: PlaceListener
    position: int = -1


class ProviderQueue:
    """The slots of one provider and the jobs waiting for them."""

    def __init__(
        self,
        name: str,
        capacity: int,
        limits: QueueLimits,
        times: ServiceTimes,
        clock: Clock,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        """``on_idle`` is called each time the last running job ends with none waiting."""
        if capacity < 1:
            raise ValueError(f"provider {name!r}: capacity must be at least 1")
        self.name = name
        self.capacity = capacity
        self.limits = limits
        self._times = times
        self._clock = clock
        self._running = 0
        self._waiting: FairQueue[_Waiter] = FairQueue()
        self._on_idle = on_idle

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def has_free_slot(self) -> bool:
        return self._running < self.capacity and not self._waiting

    def estimated_wait(self) -> float:
        """Seconds a job queued now would wait before it starts."""
        if self.has_free_slot():
            return 0.0
        return self._times.wait(self.name, len(self._waiting), self.capacity)

    def refusal(self) -> ResourceExhausted | None:
        """Why a new job may not join this queue now, or None when it may."""
        if self.has_free_slot():
            return None
        wait = self.estimated_wait()
        limits = self.limits
        if len(self._waiting) >= limits.max_queue:
            what = f"its queue is full ({limits.max_queue} jobs waiting)"
        elif limits.max_wait_s is not None and wait > limits.max_wait_s:
            what = f"a new job would wait about {wait:.1f} s, over its {limits.max_wait_s:g} s"
        else:
            return None
        return ResourceExhausted(
            f"provider {self.name!r} is at capacity: {what}; retry in {wait:.1f} s",
            violations=[QuotaViolation(f"provider:{self.name}", "provider queue")],
            retry_after=wait,
            reason="PROVIDER_QUEUE_FULL",
        )

    def claim(self) -> Slot | None:
        """A free slot, taken now without waiting; None when none is free or jobs are
        already waiting for one."""
        if not self.has_free_slot():
            return None
        self._running += 1
        return Slot(self, self._clock.monotonic())

    async def acquire(
        self, *, tenant: str, subject: str, weight: float, listener: PlaceListener
    ) -> Slot:
        """A slot: a free one at once, else the next one freed once the job's turn
        comes in fair order, telling ``listener`` each new place meanwhile. Cancelled
        while waiting, the job leaves the queue at once."""
        free = self.claim()
        if free is not None:
            return free
        waiter = _Waiter(asyncio.get_running_loop().create_future(), listener)
        self._waiting.push(waiter, tenant=tenant, subject=subject, weight=weight)
        self._announce()
        try:
            await waiter.granted
        except BaseException:
            if _was_granted(waiter.granted):
                self._release()  # the slot was passed on just as the wait ended
            else:
                self._waiting.remove(waiter)
            self._announce()
            raise
        return Slot(self, self._clock.monotonic())

    @contextlib.asynccontextmanager
    async def slot(
        self,
        *,
        tenant: str,
        subject: str,
        weight: float,
        listener: PlaceListener,
        held: Slot | None = None,
    ) -> AsyncIterator[None]:
        """Hold a slot for the body: ``held`` (one :meth:`claim` took) or one
        :meth:`acquire` waits for."""
        slot = held or await self.acquire(
            tenant=tenant, subject=subject, weight=weight, listener=listener
        )
        try:
            yield
        finally:
            slot.release()

    def _give_back(self, started: float) -> None:
        self._times.record(self.name, self._clock.monotonic() - started)
        self._release()

    def _release(self) -> None:
        while self._waiting:
            waiter = self._waiting.pop()
            # A waiter cancelled a moment ago may still be queued: its future is done,
            # and the slot goes to the next one.
            if not waiter.granted.done():
                waiter.granted.set_result(None)  # the slot passes on
                self._announce()
                return
        self._running -= 1
        if not self._running and self._on_idle is not None:
            self._on_idle()
        self._announce()

    def _announce(self) -> None:
        now = self._clock.now()
        for position, waiter in enumerate(self._waiting.order()):
            if waiter.position != position:
                waiter.position = position
                start = now + self._times.wait(self.name, position, self.capacity)
                waiter.listener(QueuePlace(position, start))


class Slot:
    """One slot of a provider, held until :meth:`release`; releasing it again does
    nothing, so every path that may end a job can release it safely."""

    __slots__ = ("_queue", "_released", "_started")

    def __init__(self, queue: ProviderQueue, started: float) -> None:
        self._queue = queue
        self._started = started
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._queue._give_back(self._started)


def _was_granted(granted: asyncio.Future[None]) -> bool:
    return granted.done() and not granted.cancelled()
