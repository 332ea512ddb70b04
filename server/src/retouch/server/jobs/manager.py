"""The jobs of this replica: idempotent submission, the tasks that run jobs, the streams
that follow them, cancellation and recovery.

A job runs in its own task, not in the call that started it: a stream only follows it,
so a dropped connection or a client that stops reading leaves the job running until it
ends or its deadline passes. Every job ends SUCCEEDED, FAILED or CANCELLED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass

from retouch.v1 import image_edit_pb2 as pb

from ..auth import Caller
from ..clock import Clock
from ..errors import Cancelled, InvalidArgument, NotFound, RetouchError, Unavailable
from .live import LiveJob
from .records import JobRecord
from .settle import JobEnded, Settlement, recorded_status, terminal
from .store import JobStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Claim:
    """A caller's hold on a request_id while its job is being admitted."""

    job_id: str = ""
    """The job that the request_id names: an earlier call's, or the one started now."""


class JobManager:
    """Starts jobs in their own tasks, lets streams follow them, and cancels them."""

    def __init__(self, store: JobStore, settlement: Settlement, clock: Clock) -> None:
        self._store = store
        self._settlement = settlement
        self._clock = clock
        self._live: dict[str, LiveJob] = {}
        self._pending: dict[tuple[str, str], tuple[str, asyncio.Future[str]]] = {}
        self.closing = False

    # -- submission ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def claim(
        self, caller: Caller, request_id: str, fingerprint: str
    ) -> AsyncIterator[Claim]:
        """Hold ``request_id`` while a job is admitted under it.

        The claim names the existing job when an earlier call used the request_id;
        otherwise the body admits a new job and sets ``claim.job_id``. Concurrent
        duplicates here wait for the first call's admission instead of racing it, so
        they never decode, reserve or charge twice.
        """
        claim = Claim()
        if not request_id:
            yield claim
            return
        key = (caller.owner, request_id)
        while True:
            pending = self._pending.get(key)
            if pending is not None:
                recorded, first = pending
                same_request(recorded, fingerprint)
                try:
                    claim.job_id = await asyncio.shield(first)
                except Exception:
                    continue  # the first call was refused; this one decides for itself
                yield claim
                return
            existing = await self._store.find_by_request(caller.owner, request_id)
            if existing is not None:
                same_request(existing.fingerprint, fingerprint)
                claim.job_id = existing.job_id
                yield claim
                return
            break
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = (fingerprint, started)
        try:
            yield claim
        except BaseException as exc:
            started.set_exception(exc if isinstance(exc, Exception) else Cancelled("cancelled"))
            started.exception()  # retrieved here; waiters retry on their own
            raise
        else:
            started.set_result(claim.job_id)
        finally:
            del self._pending[key]

    def track(self, job: JobRecord) -> LiveJob:
        """The live state of a job that is about to run here."""
        live = LiveJob(job.job_id, job.owner, self._store)
        self._live[job.job_id] = live
        return live

    def launch(self, live: LiveJob, work: Coroutine[object, object, None]) -> None:
        """Run the job's ``work`` in its own task, apart from the call that started it."""
        live.task = asyncio.create_task(self._run(live, work), name=f"job {live.job_id}")

    async def _run(self, live: LiveJob, work: Coroutine[object, object, None]) -> None:
        try:
            await work
        finally:
            self._live.pop(live.job_id, None)

    def live_job(self, job_id: str) -> LiveJob | None:
        return self._live.get(job_id)

    # -- following -------------------------------------------------------------------

    async def follow(
        self, job_id: str, caller: Caller, after_seq: int = 0
    ) -> AsyncIterator[pb.JobEvent]:
        """The job's events after ``after_seq``, live while it runs.

        Ends normally when the job succeeded; raises :class:`JobEnded` with the job's
        recorded status when it failed or was cancelled.
        """
        live = self._live.get(job_id)
        if live is not None and live.owner == caller.owner:
            async for event in live.follow(after_seq):
                yield event
            status = await live.wait_finished()
        else:
            record = await self.get(job_id, caller)
            if not record.state.terminal:
                raise Unavailable(
                    "the job runs on another replica that is not reachable; retry",
                    retry_after=1.0,
                )
            for payload in await self._store.events_after(job_id, after_seq):
                yield pb.JobEvent.FromString(payload)
            status = recorded_status(record)
        if status.code != 0:
            raise JobEnded(status)

    async def get(self, job_id: str, caller: Caller) -> JobRecord:
        record = await self._store.get_job(job_id) if job_id else None
        if record is None or record.owner != caller.owner:
            raise NotFound(f"job {job_id!r} not found")
        return record

    # -- cancelling ------------------------------------------------------------------

    async def cancel(
        self, job_id: str, caller: Caller, reason: RetouchError | None = None
    ) -> JobRecord:
        """Cancel a running job and wait until it has recorded its end."""
        record = await self.get(job_id, caller)
        live = self._live.get(job_id)
        reason = reason or Cancelled("the job was cancelled by CancelJob")
        if live is not None and live.cancel(reason):
            await live.wait_finished()
            record = await self.get(job_id, caller)
        return record

    def abandon(self, job_id: str, reason: RetouchError) -> None:
        """A stream that asked for ``cancel_on_disconnect`` went away: stop the job."""
        live = self._live.get(job_id)
        if live is not None:
            live.cancel(reason)

    # -- lifecycle -------------------------------------------------------------------

    async def recover(self) -> int:
        """Fail the jobs a previous process left unfinished, and settle their money."""
        stopped = Unavailable(
            "the server stopped while this job ran; submit it again with a new request_id"
        )
        count = 0
        for record in await self._store.unfinished_jobs():
            if record.job_id in self._live:
                continue
            final, _ = terminal(record, stopped, self._clock.now(), record.last_seq)
            if await self._store.finish(final):
                count += 1
        if count:
            log.warning("failed %d job(s) left unfinished by a previous run", count)
        await self.settle_orphans(grace_s=0.0)
        return count

    async def settle_orphans(self, grace_s: float | None = None) -> int:
        """Settle reservations whose job is not running here (see :class:`Settlement`)."""
        running_here = set(self._live)
        if grace_s is None:
            return await self._settlement.settle_orphans(running_here)
        return await self._settlement.settle_orphans(running_here, grace_s)

    async def shutdown(self, grace: float) -> None:
        """Let running jobs finish for ``grace`` seconds, then fail the rest."""
        self.closing = True
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        reason = Unavailable(
            "the server shut down before the job finished; submit it again with a new request_id"
        )
        for live in list(self._live.values()):
            live.cancel(reason)
        remaining = [t for t in tasks if not t.done()]
        if remaining:
            await asyncio.wait(remaining, timeout=5.0)


def same_request(recorded: str, fingerprint: str) -> None:
    """Refuse a request_id reused for a different request."""
    if recorded != fingerprint:
        raise InvalidArgument(
            "request_id",
            "this request_id was already used for a different request; "
            "use a new request_id for a new request",
        )


__all__ = ["Claim", "JobEnded", "JobManager"]
