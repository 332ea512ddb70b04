"""A provider's capacity and the jobs waiting for it.

A provider's capacity is counted in units, and a job holds its units (one, or more for
a large job on a provider that weighs jobs by their pixels: see
:meth:`~.scheduler.Scheduler.units`) while it decodes, runs and encodes. Jobs that do
not fit wait here, in :mod:`fair order <.fairness>`, holding only their encoded input.
Freed units pass straight to the jobs at the head of the queue, as many as they fit;
the head waits until enough are free and nothing behind it goes first, so a large job
is never starved by small ones.
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
    units: int
    position: int = -1


class ProviderQueue:
    """The capacity units of one provider and the jobs waiting for them."""

    def __init__(
        self,
        name: str,
        capacity: int,
        limits: QueueLimits,
        times: ServiceTimes,
        clock: Clock,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        """``capacity`` is in units; ``on_idle`` is called each time the last running
        job ends with none waiting."""
        if capacity < 1:
            raise ValueError(f"provider {name!r}: capacity must be at least 1")
        self.name = name
        self.capacity = capacity
        self.limits = limits
        self._times = times
        self._clock = clock
        self._running = 0
        self._used = 0
        """Units the running jobs hold."""
        self._waiting: FairQueue[_Waiter] = FairQueue()
        self._waiting_units = 0
        """Units the waiting jobs will take."""
        self._on_idle = on_idle

    @property
    def running(self) -> int:
        """Jobs holding units now."""
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def has_room(self, units: int = 1) -> bool:
        """Whether a job of ``units`` would start now: they are free and no job waits."""
        return self._used + self._fitted(units) <= self.capacity and not self._waiting

    def estimated_wait(self, units: int = 1) -> float:
        """Seconds a job of ``units`` queued now would wait before it starts."""
        if self.has_room(units):
            return 0.0
        return self._times.wait(self.name, self._waiting_units, self._fitted(units), self.capacity)

    def refusal(self, units: int = 1) -> ResourceExhausted | None:
        """Why a new job of ``units`` may not join this queue now, or None when it may."""
        if self.has_room(units):
            return None
        wait = self.estimated_wait(units)
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

    def claim(self, units: int = 1) -> Slot | None:
        """A slot of ``units``, taken now without waiting; None when they are not free
        or jobs are already waiting."""
        if not self.has_room(units):
            return None
        return self._take(self._fitted(units))

    async def acquire(
        self,
        *,
        tenant: str,
        subject: str,
        weight: float,
        listener: PlaceListener,
        units: int = 1,
    ) -> Slot:
        """A slot of ``units``: at once when they are free, else once the job's turn
        comes in fair order and enough are freed, telling ``listener`` each new place
        meanwhile. Cancelled while waiting, the job leaves the queue at once."""
        free = self.claim(units)
        if free is not None:
            return free
        units = self._fitted(units)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), listener, units)
        self._waiting.push(waiter, tenant=tenant, subject=subject, weight=weight)
        self._waiting_units += units
        self._announce()
        try:
            await waiter.granted
        except BaseException:
            if _was_granted(waiter.granted):
                self._give_back(units)  # they were passed on just as the wait ended
            elif self._waiting.remove(waiter):
                self._waiting_units -= units
                self._start_waiting()  # a large job at the head may have held others back
            self._announce()
            raise
        return Slot(self, units, self._clock.monotonic())

    @contextlib.asynccontextmanager
    async def slot(
        self,
        *,
        tenant: str,
        subject: str,
        weight: float,
        listener: PlaceListener,
        held: Slot | None = None,
        units: int = 1,
    ) -> AsyncIterator[None]:
        """Hold a slot of ``units`` for the body: ``held`` (one :meth:`claim` took) or
        one :meth:`acquire` waits for."""
        slot = held or await self.acquire(
            tenant=tenant, subject=subject, weight=weight, listener=listener, units=units
        )
        try:
            yield
        finally:
            slot.release()

    def _fitted(self, units: int) -> int:
        # A job larger than the whole capacity runs alone rather than never.
        return max(1, min(units, self.capacity))

    def _take(self, units: int) -> Slot:
        self._hold(units)
        return Slot(self, units, self._clock.monotonic())

    def _hold(self, units: int) -> None:
        self._used += units
        self._running += 1

    def _finished(self, slot: Slot) -> None:
        self._times.record(self.name, self._clock.monotonic() - slot.started)
        self._give_back(slot.units)

    def _give_back(self, units: int) -> None:
        self._used -= units
        self._running -= 1
        self._start_waiting()
        if not self._running and not self._waiting and self._on_idle is not None:
            self._on_idle()
        self._announce()

    def _start_waiting(self) -> None:
        """Pass free units to the jobs at the head of the queue, in order, while they
        fit the next one."""
        while self._waiting:
            head = self._waiting.peek()
            cancelled = head.granted.done()  # a moment ago, and not yet out of the queue
            if not cancelled and self._used + head.units > self.capacity:
                return
            self._waiting.pop()
            self._waiting_units -= head.units
            if cancelled:
                continue
            self._hold(head.units)
            head.granted.set_result(None)

    def _announce(self) -> None:
        now = self._clock.now()
        ahead = 0
        for position, waiter in enumerate(self._waiting.order()):
            if waiter.position != position:
                waiter.position = position
                wait = self._times.wait(self.name, ahead, waiter.units, self.capacity)
                waiter.listener(QueuePlace(position, now + wait))
            ahead += waiter.units


class Slot:
    """A job's units of a provider, held until :meth:`release`; releasing them again
    does nothing, so every path that may end a job can release them safely."""

    __slots__ = ("_queue", "_released", "started", "units")

    def __init__(self, queue: ProviderQueue, units: int, started: float) -> None:
        self._queue = queue
        self.units = units
        self.started = started
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._queue._finished(self)


def _was_granted(granted: asyncio.Future[None]) -> bool:
    return granted.done() and not granted.cancelled()
