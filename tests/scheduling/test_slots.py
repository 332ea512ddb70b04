"""ProviderQueue's slots when waiters are cancelled around the moment a slot frees.

The test holds the first slot itself and leaves it with ``__aexit__``, which frees the slot
without suspending: so a waiter's cancellation and the slot passing on happen in one step
of the event loop, in the order each test wants."""

from __future__ import annotations

import asyncio

from retouch.server.clock import ManualClock
from retouch.server.scheduling import ProviderQueue, QueueLimits, QueuePlace
from retouch.server.scheduling.eta import ServiceTimes


def _queue() -> ProviderQueue:
    return ProviderQueue("slow", 1, QueueLimits(), ServiceTimes(), ManualClock())


def _ignore(place: QueuePlace) -> None:
    return None


async def _hold(
    queue: ProviderQueue,
    entered: asyncio.Event,
    leave: asyncio.Event,
    queued: asyncio.Event | None = None,
) -> None:
    def placed(place: QueuePlace) -> None:
        if queued is not None:
            queued.set()

    async with queue.slot(tenant="t", subject="s", weight=1.0, listener=placed):
        entered.set()
        await leave.wait()


async def test_a_waiter_cancelled_as_the_slot_frees_passes_it_to_the_next() -> None:
    queue = _queue()
    held = queue.slot(tenant="t", subject="s", weight=1.0, listener=_ignore)
    await held.__aenter__()
    cancelled_in, third_in, third_out = asyncio.Event(), asyncio.Event(), asyncio.Event()
    first_queued, third_queued = asyncio.Event(), asyncio.Event()
    cancelled = asyncio.create_task(_hold(queue, cancelled_in, asyncio.Event(), first_queued))
    await first_queued.wait()
    third = asyncio.create_task(_hold(queue, third_in, third_out, third_queued))
    await third_queued.wait()
    cancelled.cancel()  # its handler has not run yet: it is still queued
    await held.__aexit__(None, None, None)
    await third_in.wait()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert cancelled.cancelled()
    assert not cancelled_in.is_set()
    assert (queue.running, queue.waiting) == (1, 0)
    third_out.set()
    await third
    assert (queue.running, queue.waiting) == (0, 0)


async def test_a_waiter_granted_then_cancelled_gives_the_slot_back() -> None:
    queue = _queue()
    held = queue.slot(tenant="t", subject="s", weight=1.0, listener=_ignore)
    await held.__aenter__()
    granted_in = asyncio.Event()
    queued = asyncio.Event()
    granted = asyncio.create_task(_hold(queue, granted_in, asyncio.Event(), queued))
    await queued.wait()
    await held.__aexit__(None, None, None)  # the slot passes to the waiter...
    granted.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(granted, return_exceptions=True)
    assert not granted_in.is_set()
    assert (queue.running, queue.waiting) == (0, 0)
