"""Progress from blocking work: run it in a thread (or, when it is tiny, at once on the
event loop) and stream its reports."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ._events import Event, Progress, Result

if TYPE_CHECKING:
    from ._requests import RGBImage


class JobCancelled(Exception):
    """Raised inside worker threads by :meth:`ProgressReporter.check` once the job is
    cancelled, so long computations stop between steps."""


class ProgressReporter:
    """Collects progress from a worker thread for the provider's event stream.

    ``report`` may be called from any thread. Fractions are kept monotonic: a report
    lower than the last one is raised to it rather than sent backwards.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Progress | None]
    ) -> None:
        self._loop = loop
        self._queue = queue
        self._last = 0.0
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled."""
        if self._cancelled.is_set():
            raise JobCancelled

    def report(self, fraction: float, stage: str, *, preview: RGBImage | None = None) -> None:
        """Record that ``fraction`` (0..1) of the work is done, now in ``stage``, with an
        optional RGB ``preview`` of the work so far (the server shrinks it)."""
        self.check()
        with self._lock:
            self._last = max(self._last, min(max(fraction, 0.0), 1.0))
            progress = Progress(self._last, stage, preview)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, progress)


async def run_with_progress(
    work: Callable[[ProgressReporter], Result],
    *,
    executor: Executor | None = None,
    inline: bool = False,
) -> AsyncGenerator[Event, None]:
    """Run ``work`` in ``executor`` (the loop's default when ``None``), yielding each
    progress report as it arrives and then the work's result.

    With ``inline`` the work runs at once on the event loop's thread instead, and only
    its last report follows, when it is done: the earlier ones were superseded before
    anyone could hear them, and each would cost the job's streams a message. Only for
    work smaller than the hop to a thread and back (well under a millisecond), as it
    blocks every other task while it runs and cannot be cancelled part way.

    If the consumer stops (the job is cancelled), the reporter is marked cancelled so
    ``work`` can stop at its next :meth:`ProgressReporter.check` or ``report`` call.
    A provider that re-yields these events should wrap them in
    :func:`contextlib.aclosing`, so that closing its own generator closes this one
    at once rather than when it is garbage-collected.
    """
    loop = asyncio.get_running_loop()
    # Progress and the end of the work travel through one queue: reports are queued by
    # the worker thread before the future completes, so the ``None`` that marks the end
    # always comes after the last report, with no task or wait per event.
    queue: asyncio.Queue[Progress | None] = asyncio.Queue()
    reporter = ProgressReporter(loop, queue)
    if inline:
        async for event in _run_inline(work, reporter, queue):
            yield event
        return
    future = loop.run_in_executor(executor, work, reporter)
    future.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (progress := await queue.get()) is not None:
            yield progress
        yield future.result()
    finally:
        if not future.done():
            reporter.cancel()
            future.add_done_callback(_discard_outcome)


async def _run_inline(
    work: Callable[[ProgressReporter], Result],
    reporter: ProgressReporter,
    queue: asyncio.Queue[Progress | None],
) -> AsyncGenerator[Event, None]:
    failure: Exception | None = None
    try:
        result = work(reporter)
    except Exception as exc:
        failure = exc
    # The reports were queued with call_soon_threadsafe; the end goes after them.
    asyncio.get_running_loop().call_soon(queue.put_nowait, None)
    latest: Progress | None = None
    while (progress := await queue.get()) is not None:
        latest = progress
    if latest is not None:
        yield latest
    if failure is not None:
        raise failure
    yield result


def _discard_outcome(future: asyncio.Future[Result]) -> None:
    # Nobody awaits a cancelled job's work; fetch its outcome so asyncio does not
    # report "exception was never retrieved" for the JobCancelled it ends with.
    if not future.cancelled():
        future.exception()


class WorkerPool:
    """The threads a local provider runs its blocking pixel work on.

    ``start`` (re)creates the threads, ``close`` stops them (queued work is dropped,
    running work stops at its next :meth:`ProgressReporter.check`), and ``stream`` runs
    one job's work there, as :func:`run_with_progress` does. Until ``start``, work runs
    on the event loop's default executor.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: ThreadPoolExecutor | None = None

    def start(self, max_workers: int) -> None:
        self.close()
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=self._name)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def stream(
        self, work: Callable[[ProgressReporter], Result], *, inline: bool = False
    ) -> AsyncGenerator[Event, None]:
        """Progress reports from ``work``, then its result; ``inline`` as for
        :func:`run_with_progress`."""
        # aclosing: when our consumer stops, the inner stream must close now (and tell
        # the worker to stop), not whenever it is garbage-collected.
        run = run_with_progress(work, executor=self._executor, inline=inline)
        async with contextlib.aclosing(run) as events:
            async for event in events:
                yield event
