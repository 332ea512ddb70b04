"""A provider's capacity counted in units: a job takes units by its size, the head of
the queue waits until enough are free, and nothing behind it goes first."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from retouch.sdk import Health, HealthReport
from retouch.sdk.testing import FakeProvider
from retouch.server.clock import ManualClock
from retouch.server.registry import LoadedProvider
from retouch.server.routing import Candidate
from retouch.server.scheduling import (
    FairQueue,
    ProviderQueue,
    QueueLimits,
    QueuePlace,
    Scheduler,
)
from retouch.server.scheduling.eta import ServiceTimes

SMALL, LARGE = 1, 2


class Job:
    """One job holding ``units`` of a queue from the moment its wait ends until
    :meth:`finish`; the places it was told, in order."""

    def __init__(self, queue: ProviderQueue, units: int, tenant: str = "t") -> None:
        self.places: list[int] = []
        self.started = asyncio.Event()
        self._queued = asyncio.Event()
        self._done = asyncio.Event()
        self.task = asyncio.create_task(self._run(queue, units, tenant))

    def _placed(self, place: QueuePlace) -> None:
        self.places.append(place.position)
        self._queued.set()

    async def _run(self, queue: ProviderQueue, units: int, tenant: str) -> None:
        async with queue.slot(
            tenant=tenant, subject="s", weight=1.0, listener=self._placed, units=units
        ):
            self.started.set()
            await self._done.wait()

    async def settled(self) -> None:
        """Wait until the job has either started or joined the queue."""
        started = asyncio.create_task(self.started.wait())
        queued = asyncio.create_task(self._queued.wait())
        await asyncio.wait([started, queued], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        queued.cancel()

    async def finish(self) -> None:
        self._done.set()
        await self.task


async def _jobs(queue: ProviderQueue, *units: int) -> list[Job]:
    jobs = []
    for size in units:
        job = Job(queue, size)
        await job.settled()
        jobs.append(job)
    return jobs


async def _let_run() -> None:
    """Let every task that was woken take its step (no wall-clock wait)."""
    for _ in range(5):
        await asyncio.sleep(0)


def _queue(capacity: int = 4) -> ProviderQueue:
    return ProviderQueue("local", capacity, QueueLimits(), ServiceTimes(), ManualClock())


def _started(jobs: list[Job]) -> list[bool]:
    return [job.started.is_set() for job in jobs]


async def test_small_jobs_run_as_many_at_once_as_there_are_units() -> None:
    queue = _queue(capacity=4)
    jobs = await _jobs(queue, *[SMALL] * 6)
    assert _started(jobs) == [True] * 4 + [False] * 2
    assert (queue.running, queue.waiting) == (4, 2)
    await jobs[0].finish()
    await jobs[4].started.wait()
    assert _started(jobs) == [True] * 5 + [False]
    for job in jobs[1:]:
        await job.finish()
    assert (queue.running, queue.waiting) == (0, 0)


async def test_large_jobs_run_as_many_at_once_as_their_units_fit() -> None:
    queue = _queue(capacity=4)
    jobs = await _jobs(queue, LARGE, LARGE, LARGE)
    assert _started(jobs) == [True, True, False]
    await jobs[1].finish()
    await jobs[2].started.wait()
    await jobs[0].finish()
    await jobs[2].finish()


async def test_a_large_job_at_the_head_waits_for_enough_units_and_is_not_overtaken() -> None:
    queue = _queue(capacity=4)
    running = await _jobs(queue, SMALL, SMALL, SMALL, SMALL)
    large, small = await _jobs(queue, LARGE, SMALL)
    await running[0].finish()  # one unit free: not enough for the head
    await _let_run()
    assert not large.started.is_set()
    assert not small.started.is_set()  # it would fit, but waits behind the head
    assert (queue.running, queue.waiting) == (3, 2)
    await running[1].finish()  # two free: the head starts, and nothing is left over
    await large.started.wait()
    await _let_run()
    assert not small.started.is_set()
    await running[2].finish()
    await small.started.wait()
    for job in [running[3], large, small]:
        await job.finish()
    assert (queue.running, queue.waiting) == (0, 0)


async def test_freed_units_start_every_job_at_the_head_that_fits() -> None:
    queue = _queue(capacity=4)
    first, second = await _jobs(queue, LARGE, LARGE)
    waiting = await _jobs(queue, SMALL, SMALL, LARGE)
    await first.finish()
    await waiting[1].started.wait()
    assert _started(waiting) == [True, True, False]
    await second.finish()
    await waiting[2].started.wait()
    for job in waiting:
        await job.finish()


async def test_a_large_head_cancelled_lets_the_jobs_behind_it_start() -> None:
    queue = _queue(capacity=4)
    running = await _jobs(queue, SMALL, SMALL, SMALL)
    large, small = await _jobs(queue, LARGE, SMALL)
    large.task.cancel()
    await asyncio.gather(large.task, return_exceptions=True)
    await small.started.wait()
    assert (queue.running, queue.waiting) == (4, 0)
    for job in [*running, small]:
        await job.finish()


async def test_positions_count_jobs_and_count_down_as_units_free() -> None:
    queue = _queue(capacity=4)
    running = await _jobs(queue, LARGE, SMALL, SMALL)
    waiting = await _jobs(queue, LARGE, SMALL, SMALL)
    assert [job.places for job in waiting] == [[0], [1], [2]]
    await running[1].finish()  # one unit free: the large head still waits
    await _let_run()
    assert [job.places for job in waiting] == [[0], [1], [2]]
    await running[2].finish()  # the head starts; the others move up one
    await waiting[0].started.wait()
    assert [job.places for job in waiting] == [[0], [1, 0], [2, 1]]
    await running[0].finish()  # both small ones start
    await waiting[2].started.wait()
    assert [job.places for job in waiting] == [[0], [1, 0], [2, 1]]
    for job in waiting:
        await job.finish()


async def test_a_job_larger_than_the_capacity_runs_alone() -> None:
    queue = _queue(capacity=2)
    huge, small = await _jobs(queue, 5, SMALL)
    assert _started([huge, small]) == [True, False]
    await huge.finish()
    await small.started.wait()
    await small.finish()


def test_the_estimated_wait_counts_the_units_ahead() -> None:
    times = ServiceTimes(default_s=10.0)
    queue = ProviderQueue("local", 4, QueueLimits(), times, ManualClock())
    assert queue.estimated_wait(LARGE) == 0.0
    held = [queue.claim(LARGE), queue.claim(LARGE)]
    assert queue.claim(SMALL) is None
    # Nothing waits: a small job starts after one turn of the capacity, a large too.
    assert queue.estimated_wait(SMALL) == queue.estimated_wait(LARGE) == 10.0
    for slot in held:
        assert slot is not None
        slot.release()
    assert (queue.running, queue.estimated_wait(LARGE)) == (0, 0.0)


def test_a_full_queue_refuses_only_a_job_whose_units_are_not_free() -> None:
    queue = ProviderQueue("local", 4, QueueLimits(max_queue=0), ServiceTimes(), ManualClock())
    held = [queue.claim(LARGE), queue.claim(SMALL)]
    assert queue.refusal(SMALL) is None  # its unit is free
    refusal = queue.refusal(LARGE)
    assert refusal is not None
    assert refusal.reason == "PROVIDER_QUEUE_FULL"
    assert refusal.retry_after == 1.0
    for slot in held:
        assert slot is not None
        slot.release()


def test_peek_names_what_pop_takes_next_and_leaves_it() -> None:
    queue = FairQueue[str]()
    queue.push("a1", tenant="a", subject="s")
    queue.push("a2", tenant="a", subject="s")
    queue.push("b1", tenant="b", subject="s")
    taken = []
    while queue:
        head = queue.peek()
        assert queue.peek() == head
        taken.append(queue.pop())
        assert taken[-1] == head
    assert taken == ["a1", "b1", "a2"]
    with pytest.raises(IndexError):
        queue.peek()


def _candidate(**manifest_fields: Any) -> Candidate:
    fake = FakeProvider()
    manifest = dataclasses.replace(fake.manifest, **manifest_fields)
    return Candidate(LoadedProvider(fake, manifest, HealthReport(Health.HEALTHY)), "fake", 1)


def test_a_local_provider_that_names_small_jobs_runs_two_to_a_slot() -> None:
    scheduler = Scheduler(ManualClock())
    local = _candidate(capacity=3, small_job_pixels=2_000_000)
    assert scheduler.queue(local).capacity == 6
    assert scheduler.units(local, 2_000_000) == 1
    assert scheduler.units(local, 2_000_001) == 2


def test_max_concurrency_sets_the_slots_and_small_jobs_still_take_half_of_one() -> None:
    scheduler = Scheduler(ManualClock(), {"fake": QueueLimits(max_concurrency=1)})
    local = _candidate(capacity=3, small_job_pixels=2_000_000)
    assert scheduler.queue(local).capacity == 2


@pytest.mark.parametrize(
    "manifest_fields",
    [{"capacity": 3}, {"capacity": 3, "remote": True}],
    ids=["local without small_job_pixels", "hosted"],
)
def test_other_providers_count_one_unit_a_job_whatever_its_size(
    manifest_fields: dict[str, Any],
) -> None:
    scheduler = Scheduler(ManualClock())
    provider = _candidate(**manifest_fields)
    assert scheduler.queue(provider).capacity == 3
    assert scheduler.units(provider, 1) == scheduler.units(provider, 16_777_216) == 1


@pytest.mark.parametrize(
    ("manifest_fields", "problem"),
    [
        ({"small_job_pixels": 0}, "small_job_pixels must be positive"),
        ({"small_job_pixels": 1000, "remote": True}, "small_job_pixels is for local providers"),
    ],
)
def test_the_manifest_checks_small_job_pixels(
    manifest_fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        dataclasses.replace(FakeProvider().manifest, **manifest_fields)
