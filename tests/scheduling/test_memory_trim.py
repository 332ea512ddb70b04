"""The freed heap goes back to the system once every queue has stayed empty, not in the
gaps between jobs and not while a job runs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from retouch.sdk import Health, HealthReport
from retouch.sdk.testing import FakeProvider
from retouch.server.clock import ManualClock
from retouch.server.registry import LoadedProvider
from retouch.server.routing import Candidate
from retouch.server.scheduling import Scheduler, memory

WAIT_S = 5.0
"""Bound on waiting for a trim, far beyond any it should take; it never elapses when it works."""


class Trims:
    """Counts the trims the scheduler asks for, and lets a test wait for the next one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        self._loop = loop
        self._done = asyncio.Event()

    def __call__(self) -> bool:  # runs in a worker thread, as memory.trim does
        self._loop.call_soon_threadsafe(self._note)
        return True

    def _note(self) -> None:
        self.count += 1
        self._done.set()

    async def next(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self._done.wait()
        self._done.clear()


@pytest.fixture
async def trims(monkeypatch: pytest.MonkeyPatch) -> Trims:
    counted = Trims(asyncio.get_running_loop())
    monkeypatch.setattr(memory, "trim", counted)
    return counted


def candidate() -> Candidate:
    fake = FakeProvider()
    return Candidate(LoadedProvider(fake, fake.manifest, HealthReport(Health.HEALTHY)), "fake", 1)


async def turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_drained_scheduler_trims_once_the_wait_has_passed(trims: Trims) -> None:
    scheduler = Scheduler(ManualClock(), trim_after_idle_s=0.0)
    slot = scheduler.claim(candidate())
    assert slot is not None
    await turns()
    assert trims.count == 0, "nothing is trimmed while a job holds a slot"
    slot.release()
    await trims.next()
    assert trims.count == 1


async def test_a_job_that_starts_before_the_wait_ends_puts_the_trim_off(trims: Trims) -> None:
    scheduler = Scheduler(ManualClock(), trim_after_idle_s=0.0)
    provider = candidate()
    first = scheduler.claim(provider)
    assert first is not None
    first.release()
    # The next job starts before the loop runs the pending trim: it finds a job running.
    second = scheduler.claim(provider)
    assert second is not None
    await turns()
    assert trims.count == 0
    second.release()
    await trims.next()
    assert trims.count == 1


async def test_jobs_one_after_another_trim_only_when_they_stop(trims: Trims) -> None:
    scheduler = Scheduler(ManualClock(), trim_after_idle_s=WAIT_S * 10)
    provider = candidate()
    for _ in range(20):
        slot = scheduler.claim(provider)
        assert slot is not None
        slot.release()
        await turns(1)
    await turns()
    assert trims.count == 0, "the wait starts again at each drain: no trim between jobs"


async def test_a_stream_that_ends_after_the_trim_lets_its_memory_go_too(trims: Trims) -> None:
    scheduler = Scheduler(ManualClock(), trim_after_idle_s=0.0)
    slot = scheduler.claim(candidate())
    assert slot is not None
    slot.release()
    await trims.next()
    # The burst's last stream finishes sending its result after that trim.
    scheduler.stream_ended()
    await trims.next()
    assert trims.count == 2


async def test_a_stream_that_ends_while_a_job_runs_trims_nothing(trims: Trims) -> None:
    scheduler = Scheduler(ManualClock(), trim_after_idle_s=0.0)
    slot = scheduler.claim(candidate())
    assert slot is not None
    scheduler.stream_ended()
    await turns()
    assert trims.count == 0
    slot.release()
    await trims.next()
    assert trims.count == 1


async def test_a_trim_asked_for_while_one_runs_follows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    running, finish = asyncio.Event(), threading.Event()
    count = 0

    def slow_trim() -> bool:  # runs in a worker thread, as memory.trim does
        nonlocal count
        count += 1
        loop.call_soon_threadsafe(running.set)
        return finish.wait(WAIT_S)

    monkeypatch.setattr(memory, "trim", slow_trim)
    scheduler = Scheduler(ManualClock(), trim_after_idle_s=0.0)
    slot = scheduler.claim(candidate())
    assert slot is not None
    slot.release()
    async with asyncio.timeout(WAIT_S):
        await running.wait()
    running.clear()
    scheduler.stream_ended()  # while the first trim still runs
    await turns()
    finish.set()
    async with asyncio.timeout(WAIT_S):
        await running.wait()
    assert count == 2
