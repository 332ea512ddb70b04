"""The blocking client: the async client driven by an event loop in a daemon thread.

One implementation of retries, uploads and streams serves both clients; the blocking
one only hands coroutines to its loop and waits for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import grpc

from ._client import DEFAULT_TARGET, EDIT_TIMEOUT, UNARY_TIMEOUT, AsyncClient
from ._events import Accepted, Event
from ._inputs import CHUNK_SIZE, UPLOAD_THRESHOLD
from ._jobs import EditJob, EditRequest, Job, OnProgress
from ._models import Quote
from ._results import Result, ResultInfo
from ._retry import RetryPolicy, Sleep
from ._tls import TLS

P = ParamSpec("P")
T = TypeVar("T")


class _Portal:
    """An event loop running in a daemon thread, and a way to wait for its coroutines."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="retouch-client", daemon=True
        )
        self._thread.start()

    def call(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on the loop and wait for its outcome."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking retouch Client cannot be called from its own callbacks")
        future = asyncio.run_coroutine_threadsafe(_await(awaitable), self._loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C while waiting: cancel the coroutine (and its gRPC call) too.
            future.cancel()
            raise

    def iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        """The items of ``stream``, each fetched on the loop; closed when abandoned."""
        try:
            while True:
                item = self.call(_next(stream))
                if item is None:
                    return
                yield item
        except GeneratorExit:
            close = getattr(stream, "aclose", None)
            if close is not None and not self._loop.is_closed():
                self.call(close())
            raise

    def close(self) -> None:
        """Stop the loop and its thread."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _next(stream: AsyncIterator[T]) -> T | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


@dataclass(frozen=True, slots=True)
class SyncResult(ResultInfo):
    """A result of :class:`Client`, which can fetch its bytes."""

    _portal: _Portal = field(repr=False, compare=False, kw_only=True)
    _async: Result = field(repr=False, compare=False, kw_only=True)

    @classmethod
    def wrap(cls, result: Result, portal: _Portal) -> SyncResult:
        """The blocking face of an async :class:`Result`."""
        values = {f.name: getattr(result, f.name) for f in dataclasses.fields(ResultInfo)}
        return cls(**values, _portal=portal, _async=result)

    def read(self) -> bytes:
        """The encoded image: the inline bytes, or downloaded (again on every call)."""
        return self._portal.call(self._async.read())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the image to ``path`` (a directory gets ``<result_id><ext>`` in it) and
        return where it went. The file appears whole or not at all."""
        return self._portal.call(self._async.save(path))


class SyncJob:
    """A job's events: ``for event in job`` yields :class:`Accepted`, :class:`Progress`
    and :class:`Completed`; ``job.result()`` waits for the :class:`SyncResult`.

    Nothing is sent before the job is iterated or waited for; see :class:`Job`.
    """

    def __init__(self, job: Job, portal: _Portal) -> None:
        self._job = job
        self._portal = portal

    @property
    def job_id(self) -> str | None:
        """The job's id, once its first event arrived."""
        return self._job.job_id

    @property
    def accepted(self) -> Accepted | None:
        """The job's Accepted event, once seen."""
        return self._job.accepted

    @property
    def last_seq(self) -> int:
        """The seq of the last event seen."""
        return self._job.last_seq

    def __iter__(self) -> Iterator[Event]:
        return self._portal.iterate(aiter(self._job))

    def result(self) -> SyncResult:
        """Read the stream to its end and return the result."""
        return SyncResult.wrap(self._portal.call(self._job.result()), self._portal)

    def cancel(self) -> None:
        """Cancel the job on the server (when its id is known) and end this stream."""
        self._portal.call(self._job.cancel())

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._job.cancelled()


class SyncEditJob(SyncJob):
    """An edit: a :class:`SyncJob` with its ``request_id``, which can also be quoted."""

    def __init__(self, job: EditJob, portal: _Portal) -> None:
        super().__init__(job, portal)
        self._edit = job

    @property
    def request_id(self) -> str:
        """The idempotency key every attempt sends."""
        return self._edit.request_id

    def request(self) -> EditRequest:
        """The request every attempt sends, with its inputs resolved."""
        return self._portal.call(self._edit.request())

    def quote(self, *, timeout_s: float | None = None) -> Quote:
        """What this edit would cost and whether it would be refused, without running,
        reserving or charging anything."""
        return self._portal.call(self._edit.quote(timeout_s=timeout_s))


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Client, P], T]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._portal.call(method(self._client, *args, **kwargs))

    _describe(call, method)
    return call


def _editing(
    method: Callable[Concatenate[AsyncClient, P], EditJob],
) -> Callable[Concatenate[Client, P], SyncEditJob]:
    def edit(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> SyncEditJob:
        return SyncEditJob(method(self._client, *args, **kwargs), self._portal)

    _describe(edit, method, returns="SyncEditJob")
    return edit


def _describe(wrapper: Callable[..., Any], method: Callable[..., Any], returns: str = "") -> None:
    # help() and IDEs show the async method's signature and docs under Client's name.
    functools.update_wrapper(wrapper, method)
    wrapper.__module__ = __name__
    wrapper.__qualname__ = f"Client.{method.__name__}"
    if returns:
        signature = inspect.signature(method).replace(return_annotation=returns)
        wrapper.__signature__ = signature  # type: ignore[attr-defined]


class Client:
    """The blocking client, with the same methods and arguments as :class:`AsyncClient`.

    Calls run on an event loop in a daemon thread that the client owns; callbacks
    (``on_progress``, ``sleep``) run there too. Close it, or use ``with``::

        with Client(api_key=key, subject="user:42") as client:
            client.inpaint("photo.png", mask="mask.png").result().save("out.png")
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str,
        subject: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        tls: TLS | None = None,
        timeout_s: float | None = UNARY_TIMEOUT,
        edit_timeout_s: float | None = EDIT_TIMEOUT,
        retry: RetryPolicy | None = None,
        upload_threshold: int = UPLOAD_THRESHOLD,
        chunk_size: int = CHUNK_SIZE,
        sleep: Sleep = asyncio.sleep,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        async def connect() -> AsyncClient:
            # grpc.aio binds a channel to the loop it is made on.
            return AsyncClient(
                target,
                api_key=api_key,
                subject=subject,
                credentials=credentials,
                tls=tls,
                timeout_s=timeout_s,
                edit_timeout_s=edit_timeout_s,
                retry=retry,
                upload_threshold=upload_threshold,
                chunk_size=chunk_size,
                sleep=sleep,
                options=options,
            )

        self._portal = _Portal()
        try:
            self._client = self._portal.call(connect())
        except BaseException:
            self._portal.close()
            raise
        self._owns_portal = True

    @property
    def target(self) -> str:
        """The server address."""
        return self._client.target

    @property
    def subject(self) -> str | None:
        """The subject calls act for; ``None`` when the tenant acts for itself."""
        return self._client.subject

    def with_subject(self, subject: str | None) -> Client:
        """A client acting for ``subject`` over this client's channel and loop; closing
        it leaves them open."""
        other = object.__new__(Client)
        other._portal = self._portal
        other._client = self._client.with_subject(subject)
        other._owns_portal = False
        return other

    def close(self) -> None:
        """Close the channel and stop the client's thread."""
        if self._owns_portal:
            try:
                self._portal.call(self._client.close())
            finally:
                self._portal.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r}, subject={self.subject!r})"

    inpaint = _editing(AsyncClient.inpaint)
    outpaint = _editing(AsyncClient.outpaint)
    enhance = _editing(AsyncClient.enhance)

    get_job = _blocking(AsyncClient.get_job)
    list_jobs = _blocking(AsyncClient.list_jobs)
    cancel_job = _blocking(AsyncClient.cancel_job)
    upload = _blocking(AsyncClient.upload)
    download_to = _blocking(AsyncClient.download_to)
    providers = _blocking(AsyncClient.providers)
    get_usage = _blocking(AsyncClient.get_usage)
    set_plan = _blocking(AsyncClient.set_plan)
    grant_credits = _blocking(AsyncClient.grant_credits)

    def watch(
        self,
        job_id: str,
        *,
        after_seq: int = 0,
        timeout_s: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> SyncJob:
        """Re-attach to a running or finished job; see :meth:`AsyncClient.watch`."""
        job = self._client.watch(
            job_id, after_seq=after_seq, timeout_s=timeout_s, on_progress=on_progress
        )
        return SyncJob(job, self._portal)

    def download(self, result_id: str, *, timeout_s: float | None = None) -> Iterator[bytes]:
        """The bytes of a result of the caller, chunk by chunk."""
        return self._portal.iterate(self._client.download(result_id, timeout_s=timeout_s))
