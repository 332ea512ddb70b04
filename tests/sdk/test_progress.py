"""run_with_progress streams a worker thread's progress and stops it on cancel."""

from __future__ import annotations

import asyncio
import threading
from contextlib import aclosing

import numpy as np
import pytest

from retouch.sdk import (
    Event,
    JobCancelled,
    Progress,
    ProgressReporter,
    ProviderUnavailable,
    Result,
    run_with_progress,
)

# Bounds waits on worker threads so a broken implementation fails instead of hanging.
THREAD_WAIT_S = 5.0


def result() -> Result:
    return Result(np.zeros((1, 1, 3), np.uint8))


async def test_progress_arrives_in_order_then_the_result() -> None:
    def work(reporter: ProgressReporter) -> Result:
        for fraction in (0.1, 0.5, 0.3, 0.9):
            reporter.report(fraction, f"at {fraction}")
        return result()

    events: list[Event] = [event async for event in run_with_progress(work)]

    assert isinstance(events[-1], Result)
    progress = [event for event in events if isinstance(event, Progress)]
    assert [p.stage for p in progress] == ["at 0.1", "at 0.5", "at 0.3", "at 0.9"]
    # A report lower than the last is raised to it, never sent backwards.
    assert [p.fraction for p in progress] == [0.1, 0.5, 0.5, 0.9]


async def test_out_of_range_reports_are_clamped() -> None:
    def work(reporter: ProgressReporter) -> Result:
        reporter.report(-1.0, "below")
        reporter.report(7.0, "above")
        return result()

    events = [event async for event in run_with_progress(work)]
    assert [e.fraction for e in events if isinstance(e, Progress)] == [0.0, 1.0]


async def test_the_works_error_ends_the_stream_after_its_progress() -> None:
    def work(reporter: ProgressReporter) -> Result:
        reporter.report(0.5, "half")
        raise ProviderUnavailable("upstream down")

    async with aclosing(run_with_progress(work)) as events:
        assert isinstance(await anext(events), Progress)
        with pytest.raises(ProviderUnavailable, match="upstream down"):
            await anext(events)


async def test_closing_the_stream_stops_the_work_at_its_next_check() -> None:
    proceed, done = threading.Event(), threading.Event()
    outcome: list[str] = []

    def work(reporter: ProgressReporter) -> Result:
        try:
            reporter.report(0.1, "started")
            proceed.wait(THREAD_WAIT_S)
            reporter.check()
            outcome.append("finished")
            return result()
        except JobCancelled:
            outcome.append("cancelled")
            raise
        finally:
            done.set()

    async with aclosing(run_with_progress(work)) as events:
        first = await anext(events)
    assert isinstance(first, Progress)
    proceed.set()
    assert await asyncio.to_thread(done.wait, THREAD_WAIT_S)
    assert outcome == ["cancelled"]


async def test_cancelling_the_consumer_stops_the_work_and_leaves_no_task_behind() -> None:
    proceed, done = threading.Event(), threading.Event()
    outcome: list[str] = []

    def work(reporter: ProgressReporter) -> Result:
        try:
            reporter.report(0.1, "started")
            proceed.wait(THREAD_WAIT_S)
            reporter.report(0.9, "almost")
            outcome.append("finished")
            return result()
        except JobCancelled:
            outcome.append("cancelled")
            raise
        finally:
            done.set()

    got: list[Event] = []
    first = asyncio.Event()

    async def consume() -> None:
        async with aclosing(run_with_progress(work)) as events:
            async for event in events:
                got.append(event)
                first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    proceed.set()
    assert await asyncio.to_thread(done.wait, THREAD_WAIT_S)

    assert outcome == ["cancelled"]
    assert not any(isinstance(event, Result) for event in got)
    # The queue getter the cancelled wait left behind must not outlive the stream.
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_inline_work_runs_on_the_loops_thread_and_reports_only_its_last_progress() -> None:
    ran_on: list[int] = []

    def work(reporter: ProgressReporter) -> Result:
        ran_on.append(threading.get_ident())
        reporter.report(0.2, "first")
        reporter.report(0.7, "second")
        reporter.report(0.9, "third")
        return result()

    events = [event async for event in run_with_progress(work, inline=True)]

    assert ran_on == [threading.get_ident()]
    assert [type(e).__name__ for e in events] == ["Progress", "Result"]
    assert [(e.fraction, e.stage) for e in events if isinstance(e, Progress)] == [(0.9, "third")]


async def test_inline_work_that_reports_nothing_yields_only_its_result() -> None:
    events = [event async for event in run_with_progress(lambda _: result(), inline=True)]

    assert [type(e).__name__ for e in events] == ["Result"]


async def test_inline_work_that_fails_reports_first_then_raises() -> None:
    def work(reporter: ProgressReporter) -> Result:
        reporter.report(0.1, "superseded")
        reporter.report(0.3, "before the failure")
        raise ProviderUnavailable("the model fell over")

    seen: list[Event] = []

    async def consume() -> None:
        async for event in run_with_progress(work, inline=True):
            seen.append(event)

    with pytest.raises(ProviderUnavailable, match="fell over"):
        await consume()
    assert [e.stage for e in seen if isinstance(e, Progress)] == ["before the failure"]
