"""The jobs of this replica: idempotent submission, the tasks that run jobs, the streams
that follow them, cancellation and leases.

A job runs in its own task, not in the call that started it: a stream only follows it,
so a dropped connection or a client that stops reading leaves the job running until it
ends or its deadline passes. Every job ends SUCCEEDED, FAILED or CANCELLED.

Across replicas: a stream on any replica follows a job running on another through the
store's recorded events and wake-ups; CancelJob on any replica reaches the job through
the store's cancel requests — at once through their wake-up, and within one heartbeat
through the lease renewal when a wake-up was lost; each replica holds a lease on the
jobs it runs, renewed by :meth:`JobManager.heartbeat`, and a job whose lease expired —
its replica died or stalled — is taken over, failed and refunded by whichever replica
sees it first, and stopped on its old replica by that one's next heartbeat.
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
from ..errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RetouchError,
    Unavailable,
)
from .live import LiveJob
from .records import JobRecord
from .settle import JobEnded, Settlement, recorded_status
from .store import JobStore

log = logging.getLogger(__name__)

CANCELLED_BY_CANCEL_JOB = "the job was cancelled by CancelJob"
LEASE_LOST = (
    "this replica lost its hold on the job (its lease ran out while it stalled, and "
    "another replica ended the job); submit it again with a new request_id"
)


@dataclass(slots=True)
class Claim:
    """A caller's hold on a request_id while its job is being admitted."""

    job_id: str = ""
    """The job that the request_id names: an earlier call's, or the one started now."""


class JobManager:
    """Starts jobs in their own tasks, lets streams follow them, and cancels them."""

    def __init__(
        self,
        store: JobStore,
        settlement: Settlement,
        clock: Clock,
        *,
        replica_id: str,
        lease_s: float,
    ) -> None:
        self.replica_id = replica_id
        """Names this replica on the jobs it runs."""
        self.lease_s = lease_s
        """How long a lease lasts from its last renewal."""
        self._store = store
        self._settlement = settlement
        self._clock = clock
        self._live: dict[str, LiveJob] = {}
        self._pending: dict[tuple[str, str], tuple[str, asyncio.Future[str]]] = {}
        self._requests: set[asyncio.Task[bool]] = set()
        self.closing = False
        self._store_was_lost = False
        self._failing_held_until = 0.0

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
            if key not in self._pending:  # another call may have claimed it meanwhile
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
        live.lease_until = job.lease_until
        self._live[job.job_id] = live
        return live

    def launch(self, live: LiveJob, work: Coroutine[object, object, None]) -> asyncio.Task[None]:
        """Run the job's ``work`` in its own task, apart from the call that started it."""
        task = asyncio.create_task(self._run(live, work), name=f"job {live.job_id}")
        live.task = task
        return task

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
        """The job's events after ``after_seq``, live while it runs, wherever it runs.

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
            seq = after_seq
            async with contextlib.aclosing(self._store.watch_events(job_id)) as changes:
                async for _ in changes:
                    # The state first: a job's events are all recorded before it ends, so
                    # once it reads as ended the events read next are complete.
                    record = await self._store.get_job(job_id) or record
                    for payload in await self._store.events_after(job_id, seq):
                        event = pb.JobEvent.FromString(payload)
                        seq = event.seq
                        yield event
                    if record.state.terminal:
                        break
            status = recorded_status(record)
        if status.code != 0:
            raise JobEnded(status)

    async def get(self, job_id: str, caller: Caller) -> JobRecord:
        record = await self._store.get_job(job_id) if job_id else None
        if record is None or record.owner != caller.owner:
            raise NotFound(f"job {job_id!r} not found")
        return record

    # -- cancelling ------------------------------------------------------------------

    async def cancel(self, job_id: str, caller: Caller) -> JobRecord:
        """Cancel a running job, wherever it runs, and wait until it has recorded its end."""
        record = await self.get(job_id, caller)
        if record.state.terminal:
            return record
        live = self._live.get(job_id)
        if live is not None:
            live.cancel(Cancelled(CANCELLED_BY_CANCEL_JOB))
            await live.wait_finished()  # also when it was already recording its end
        elif await self._store.request_cancel(job_id):
            await self._until_ended(job_id)
        return await self.get(job_id, caller)

    async def _until_ended(self, job_id: str) -> None:
        async with contextlib.aclosing(self._store.watch_events(job_id)) as changes:
            async for _ in changes:
                record = await self._store.get_job(job_id)
                if record is None or record.state.terminal:
                    return

    async def follow_cancel_requests(self) -> None:
        """Stop the jobs running here whose cancellation any replica's CancelJob asked for.
        Runs for the server's life."""
        async with contextlib.aclosing(self._store.cancel_requests()) as requests:
            async for job_id in requests:
                live = self._live.get(job_id)
                if live is not None:
                    live.cancel(Cancelled(CANCELLED_BY_CANCEL_JOB))

    def abandon(self, job_id: str, reason: RetouchError) -> None:
        """A stream that asked for ``cancel_on_disconnect`` went away: stop the job,
        here at once, or through a cancel request when another replica runs it."""
        live = self._live.get(job_id)
        if live is not None:
            live.cancel(reason)
            return
        request = asyncio.create_task(self._store.request_cancel(job_id))
        self._requests.add(request)
        request.add_done_callback(self._requests.discard)

    # -- lifecycle -------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Renew the leases on the jobs running here and act on what the renewal learned,
        then fail the expired jobs of replicas that stopped.

        The server runs this every ``job_heartbeat_s``, which its config holds shorter
        than ``job_lease_s`` (3 s against 10 s by default), so a live replica renews each
        lease before it runs out. The one statement that renews the leases also names
        the jobs among them whose cancellation any replica asked for — these are
        cancelled here, so a cancel reaches its job within one heartbeat interval even
        when the wake-up that brings it at once was lost with a dropped LISTEN
        connection — and leaves out the jobs this replica no longer holds: taken over
        and failed by another replica after this one stalled past a lease. Those stop
        here too, uncharged.

        After a heartbeat that failed (the store could not be reached, so no replica
        could renew its leases), this replica fails no other replica's jobs for one
        lease: every live replica renews within that time once the store is back, and
        a job whose lease ran out only because of the outage is not failed by whichever
        replica reconnected first.
        """
        try:
            await self._renew()
            now = self._clock.now()
            if self._store_was_lost:
                self._store_was_lost = False
                self._failing_held_until = now + self.lease_s
                log.warning(
                    "the job store answers again; expired leases are failed from %.1f s "
                    "on, once the other replicas have renewed theirs",
                    self.lease_s,
                )
            if now >= self._failing_held_until:
                await self.fail_expired()
        except Exception:
            self._store_was_lost = True
            raise

    async def _renew(self) -> None:
        running = list(self._live)
        if running:
            until = self._clock.now() + self.lease_s
            renewal = await self._store.renew_leases(self.replica_id, running, until)
            for job_id in running:
                live = self._live.get(job_id)
                if live is None:
                    continue  # it ended while the leases were renewed
                if job_id not in renewal.renewed:
                    # Also a job that has just recorded its end here: then it is settling
                    # and cancel() leaves it alone.
                    live.cancel(Unavailable(LEASE_LOST))
                    continue
                live.lease_until = until
                if job_id in renewal.cancel_requested:
                    live.cancel(Cancelled(CANCELLED_BY_CANCEL_JOB))

    async def fail_expired(self) -> int:
        """Take over, fail and refund the jobs whose lease expired: the replica that ran
        them died or stalled. Returns how many this replica failed (another may have been
        first, or their replica may have renewed them meanwhile)."""
        failed = 0
        now = self._clock.now()
        for record in await self._store.expired_jobs(now):
            if record.job_id in self._live:
                continue  # stalled here: the next renewal extends it, unless taken over
            if not await self._store.take_over(
                record.job_id, self.replica_id, now=now, until=now + self.lease_s
            ):
                continue
            reason = (
                DeadlineExceeded("the job's deadline passed while no replica ran it")
                if record.deadline_at and record.deadline_at <= now
                else Unavailable(
                    "the replica running this job stopped before it finished; "
                    "submit it again with a new request_id"
                )
            )
            # Recorded as it expired: naming the replica that ran it, and its last lease.
            if await self._settlement.fail_abandoned(record, reason, holder=self.replica_id):
                failed += 1
        if failed:
            log.warning("failed %d job(s) whose replica stopped holding them", failed)
        return failed

    async def settle_orphans(self) -> int:
        """Settle reservations whose job is not running here (see :class:`Settlement`)."""
        return await self._settlement.settle_orphans(set(self._live))

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
