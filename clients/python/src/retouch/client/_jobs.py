"""A job's event stream that is both an async iterator of events and an awaitable result."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc import aio

from retouch.v1 import account_pb2
from retouch.v1 import image_edit_pb2 as pb

from ._errors import Cancelled, RetouchError, ServerError, from_rpc_error
from ._events import Accepted, Completed, Event, Progress, event
from ._models import Quote
from ._results import Result
from ._retry import Deadline, RetryPolicy, Sleep

if TYPE_CHECKING:
    from ._client import AsyncClient

StreamCall: TypeAlias = "aio.UnaryStreamCall[Any, pb.JobEvent]"
Starter: TypeAlias = Callable[[int, "float | None"], Awaitable[StreamCall]]
"""Opens one attempt's stream, given the last seq seen and the time left."""
OnProgress: TypeAlias = Callable[[Progress], object]
"""Called with each Progress event; may return an awaitable, which is awaited."""
EditRequest: TypeAlias = pb.InpaintRequest | pb.OutpaintRequest | pb.EnhanceRequest


class Job:
    """A job's events: ``async for event in job`` yields :class:`Accepted`,
    :class:`Progress` and :class:`Completed`; ``await job`` returns the :class:`Result`.

    Nothing is sent before the job is iterated or awaited, and the stream is read once:
    awaiting after a partial iteration reads the rest. A failed job raises its
    :class:`RetouchError` from either. Retries follow the client's
    :class:`RetryPolicy`; events a retry replays are skipped, so every seq is seen once.
    """

    def __init__(
        self,
        client: AsyncClient,
        start: Starter,
        *,
        timeout_s: float | None,
        retry: RetryPolicy,
        sleep: Sleep,
        on_progress: OnProgress | None = None,
        after_seq: int = 0,
    ) -> None:
        self._client = client
        self._start = start
        self._timeout = timeout_s
        self._retry = retry
        self._sleep = sleep
        self._on_progress = on_progress
        self._last_seq = after_seq
        self._stream: AsyncGenerator[Event, None] | None = None
        self._call: StreamCall | None = None
        self._job_id: str | None = None
        self._accepted: Accepted | None = None
        self._completed: Completed | None = None
        self._cancelled = False
        self._error: RetouchError | None = None

    @property
    def job_id(self) -> str | None:
        """The job's id, once its first event arrived."""
        return self._job_id

    @property
    def accepted(self) -> Accepted | None:
        """The job's Accepted event, once seen."""
        return self._accepted

    @property
    def last_seq(self) -> int:
        """The seq of the last event seen; ``watch(job_id, after_seq=...)`` resumes there."""
        return self._last_seq

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._follow()

    def __await__(self) -> Generator[Any, None, Result]:
        return self.result().__await__()

    async def result(self) -> Result:
        """Read the stream to its end and return the result."""
        async for _ in self._follow():
            pass
        if self._completed is None:
            raise ServerError(
                grpc.StatusCode.UNKNOWN,
                "the job's stream ended without a Completed event "
                "(a watch with after_seq at or past the job's last event sees none)",
            )
        return Result.of(self._completed, self._accepted, client=self._client)

    async def cancel(self) -> None:
        """Cancel the job on the server (when its id is known) and end this stream.

        Whoever reads the stream then gets :class:`Cancelled`.
        """
        self._cancelled = True
        try:
            if self._job_id is not None:
                await self._client.cancel_job(self._job_id)
        finally:
            if self._call is not None:
                self._call.cancel()

    async def _follow(self) -> AsyncIterator[Event]:
        # One shared generator: a consumer that stops early leaves the rest for the next,
        # and one that comes after a failure gets the same error.
        if self._error is not None:
            raise self._error
        if self._stream is None:
            self._stream = self._run()
        try:
            async for item in self._stream:
                yield item
        except RetouchError as error:
            self._error = error
            raise

    async def _run(self) -> AsyncGenerator[Event, None]:
        deadline = Deadline(self._timeout)
        attempt = 0
        while True:
            attempt += 1
            if self._cancelled:
                raise _cancelled()  # before the first attempt, or during a retry's wait
            call = await self._start(self._last_seq, deadline.remaining())
            self._call = call
            try:
                async for message in call:
                    item = event(message)
                    if item is None or item.seq <= self._last_seq:
                        continue
                    self._last_seq = item.seq
                    self._job_id = item.job_id
                    if isinstance(item, Accepted):
                        self._accepted = item
                    elif isinstance(item, Completed):
                        self._completed = item
                    elif self._on_progress is not None:
                        outcome = self._on_progress(item)
                        if inspect.isawaitable(outcome):
                            await outcome
                    yield item
                return
            except grpc.RpcError as raw:
                error = from_rpc_error(raw)
                if self.cancelled() and error.code == grpc.StatusCode.CANCELLED:
                    raise _cancelled() from None
                wait = self._retry_delay(error, attempt, job_exists=self._job_id is not None)
                if wait is None or not deadline.allows(wait):
                    raise error from raw
            except asyncio.CancelledError:
                # grpc.aio raises CancelledError into the reader of a call that
                # ``cancel()`` ended; only a real task cancellation may propagate as such.
                task = asyncio.current_task()
                if self.cancelled() and (task is None or task.cancelling() == 0):
                    raise _cancelled() from None
                raise
            finally:
                call.cancel()
            await self._sleep(wait)

    def _retry_delay(self, error: RetouchError, attempt: int, *, job_exists: bool) -> float | None:
        # Once the job exists, a status with RetryInfo is the job's own failure, and the
        # same request_id would only replay it; a lost connection (no RetryInfo) is
        # worth re-attaching to.
        if job_exists and error.retry_after is not None:
            return None
        return self._retry.delay(error, attempt)


class EditJob(Job):
    """An edit: a :class:`Job` with the ``request_id`` every attempt sends, which can
    also be quoted instead of run."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        request_id: str,
        build: Callable[[], Awaitable[EditRequest]],
        timeout_s: float | None,
        retry: RetryPolicy,
        sleep: Sleep,
        on_progress: OnProgress | None,
    ) -> None:
        super().__init__(
            client,
            self._open,
            timeout_s=timeout_s,
            retry=retry,
            sleep=sleep,
            on_progress=on_progress,
        )
        self.request_id = request_id
        self._build = build
        self._request: EditRequest | None = None

    async def request(self) -> EditRequest:
        """The request every attempt sends, with its inputs resolved (and large inputs
        uploaded) on first use."""
        if self._request is None:
            self._request = await self._build()
        return self._request

    async def quote(self, *, timeout_s: float | None = None) -> Quote:
        """What this edit would cost and whether it would be refused, without running,
        reserving or charging anything (``Account.Quote``)."""
        request = await self.request()
        if isinstance(request, pb.InpaintRequest):
            message = account_pb2.QuoteRequest(inpaint=request)
        elif isinstance(request, pb.OutpaintRequest):
            message = account_pb2.QuoteRequest(outpaint=request)
        else:
            message = account_pb2.QuoteRequest(enhance=request)
        return await self._client._quote(message, timeout_s=timeout_s)

    async def _open(self, last_seq: int, timeout_s: float | None) -> StreamCall:
        return self._client._open_edit(await self.request(), timeout_s)


def _cancelled() -> Cancelled:
    return Cancelled(grpc.StatusCode.CANCELLED, "the job was cancelled by this client")
