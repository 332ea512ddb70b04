"""Jobs from submission to a terminal state: idempotency, admission, fan-out, recovery.

Every job ends SUCCEEDED, FAILED or CANCELLED — including jobs whose client went away,
whose deadline passed, whose provider failed, and jobs that were running when the
server stopped (failed, and refunded, at the next start by :meth:`JobManager.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from google.rpc import status_pb2

from retouch.v1 import image_edit_pb2 as pb

from ..auth import Caller
from ..clock import Clock
from ..edits import PreparedEdit
from ..errors import Cancelled, InvalidArgument, NotFound, RetouchError, Unavailable
from ..ids import new_id
from ..policy import Plan, Policy
from ..policy.upstream import UpstreamLimits
from ..routing import ALLOW_ALL, Route, RoutePolicy, Router
from ..storage import ObjectStore
from ..telemetry import stage
from .live import LiveJob
from .records import JobRecord, JobState
from .runner import OK, Admission, JobEnded, JobRunner, terminal
from .store import JobStore

log = logging.getLogger(__name__)

ORPHAN_GRACE_S = 60.0
"""Age after which a reservation with no job record is treated as orphaned."""


@dataclass(frozen=True, slots=True)
class Submission:
    """An edit request as the manager sees it."""

    caller: Caller
    request_id: str
    fingerprint: str
    prepare: Callable[[], Awaitable[PreparedEdit]]
    """Validates, admits (plan caps, token buckets) and decodes the edit."""
    plan: Plan | None = None
    timeout: float | None = None
    """Seconds until the caller's deadline, if it set one."""


class JobManager:
    """Starts jobs, runs them to a terminal state, and lets streams follow them."""

    def __init__(
        self,
        store: JobStore,
        objects: ObjectStore,
        router: Router,
        clock: Clock,
        *,
        policy: Policy | None = None,
        upstream: UpstreamLimits | None = None,
    ) -> None:
        self._store = store
        self._router = router
        self._clock = clock
        self._policy = policy
        self._upstream = upstream
        self._runner = JobRunner(
            store=store,
            objects=objects,
            clock=clock,
            ledger=policy.ledger if policy else None,
            upstream=upstream,
            latency=router.latency,
        )
        self._live: dict[str, LiveJob] = {}
        self._pending: dict[tuple[str, str], tuple[str, asyncio.Future[str]]] = {}
        self.closing = False

    # -- submission ------------------------------------------------------------------

    async def submit(self, submission: Submission) -> str:
        """Start the job, or return the job an earlier call with the same request_id made.

        Concurrent duplicates wait for the first call's admission instead of racing it,
        so they never decode, reserve or charge twice.
        """
        caller, request_id = submission.caller, submission.request_id
        if not request_id:
            return await self._start(submission)
        key = (caller.owner, request_id)
        while True:
            pending = self._pending.get(key)
            if pending is not None:
                fingerprint, first = pending
                _same_request(fingerprint, submission.fingerprint)
                with contextlib.suppress(Exception):
                    return await asyncio.shield(first)
                continue  # the first call was refused; this one decides for itself
            existing = await self._store.find_by_request(caller.owner, request_id)
            if existing is not None:
                _same_request(existing.fingerprint, submission.fingerprint)
                return existing.job_id
            break
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = (submission.fingerprint, started)
        try:
            job_id = await self._start(submission)
        except BaseException as exc:
            started.set_exception(exc if isinstance(exc, Exception) else Cancelled("cancelled"))
            started.exception()  # retrieved here; waiters retry on their own
            raise
        else:
            started.set_result(job_id)
            return job_id
        finally:
            del self._pending[key]

    async def _start(self, submission: Submission) -> str:
        if self.closing:
            raise Unavailable("the server is shutting down; retry on another replica or later")
        prepared = await submission.prepare()
        caller, plan = submission.caller, submission.plan
        with stage("routing"):
            route = await self.route(prepared, plan)
        first = route.candidates[0]
        now = self._clock.now()
        record = JobRecord(
            job_id=new_id("job", self._clock),
            owner=caller.owner,
            subject=caller.subject,
            request_id=submission.request_id,
            fingerprint=submission.fingerprint,
            operation=prepared.operation.value,
            state=JobState.RUNNING,
            provider=first.name,
            model=first.model,
            seed=prepared.seed,
            created_at=now,
            updated_at=now,
        )
        balance = None
        if self._policy is not None and plan is not None:
            with stage("policy.reserve"):
                balance = await self._policy.reserve(record.job_id, caller, plan, first.price)
        try:
            stored, created = await self._store.create_or_get(record)
        except BaseException:
            await self._release(record.job_id, "job not created")
            raise
        if not created:
            await self._release(record.job_id, "duplicate request")
            _same_request(stored.fingerprint, submission.fingerprint)
            return stored.job_id
        live = LiveJob(record.job_id, record.owner)
        self._live[record.job_id] = live
        admission = Admission(record, prepared, route, plan, balance, submission.timeout)
        live.task = asyncio.create_task(self._run(live, admission), name=f"job {record.job_id}")
        return record.job_id

    async def _run(self, live: LiveJob, admission: Admission) -> None:
        try:
            await self._runner.run(live, admission)
        finally:
            self._live.pop(live.job_id, None)

    async def route(self, prepared: PreparedEdit, plan: Plan | None) -> Route:
        """The router's decision for an edit under ``plan``; raises when none may take it."""
        return self._router.route(
            prepared.route,
            prepared.output_size,
            await self._route_policy(plan, prepared.output_size),
        )

    async def _route_policy(self, plan: Plan | None, output_size: tuple[int, int]) -> RoutePolicy:
        policy = self._policy
        if policy is None or plan is None:
            return ALLOW_ALL
        waits = await self._upstream.waits() if self._upstream else {}
        return RoutePolicy(
            exclusion=lambda manifest: policy.exclusion(plan, manifest),
            price=lambda cost: policy.price(plan, cost, output_size),
            upstream_wait=lambda name: waits.get(name, 0.0),
        )

    async def _release(self, job_id: str, note: str) -> None:
        if self._policy is not None:
            await self._policy.ledger.release(job_id, now=self._clock.now(), note=note)

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
            status = (
                status_pb2.Status.FromString(record.final_status) if record.final_status else OK
            )
        if status.code != 0:
            raise JobEnded(status)

    def live_job(self, job_id: str) -> LiveJob | None:
        return self._live.get(job_id)

    async def get(self, job_id: str, caller: Caller) -> JobRecord:
        record = await self._store.get_job(job_id) if job_id else None
        if record is None or record.owner != caller.owner:
            raise NotFound(f"job {job_id!r} not found")
        return record

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
        """The stream that started the job went away: stop the job."""
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

    async def settle_orphans(self, grace_s: float = ORPHAN_GRACE_S) -> int:
        """Settle held reservations whose job is not running here: charge succeeded jobs,
        refund the rest. Covers a crash between a job's end and its settlement."""
        if self._policy is None:
            return 0
        ledger = self._policy.ledger
        now = self._clock.now()
        settled = 0
        for reservation in await ledger.held_reservations():
            if reservation.job_id in self._live:
                continue
            record = await self._store.get_job(reservation.job_id)
            if record is None:
                if now - reservation.created_at < grace_s:
                    continue
                await ledger.release(reservation.job_id, now=now, note="orphaned reservation")
            elif record.state is JobState.SUCCEEDED:
                await ledger.commit(reservation.job_id, record.cost_credits, now=now)
            elif record.state.terminal:
                await ledger.release(reservation.job_id, now=now, note=record.error_code)
            else:
                continue
            settled += 1
        if settled:
            log.warning("settled %d orphaned reservation(s)", settled)
        return settled

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


def _same_request(recorded: str, fingerprint: str) -> None:
    if recorded != fingerprint:
        raise InvalidArgument(
            "request_id",
            "this request_id was already used for a different request; "
            "use a new request_id for a new request",
        )


__all__ = ["JobEnded", "JobManager", "Submission"]
