"""The settle stage: a job's terminal state recorded, then its money moved — the hold
committed at the actual cost when it succeeded, released (refunded) otherwise.

Recording the end is a compare-and-set (:meth:`JobStore.finish`) that only the replica
holding the job can win, so a replica that stalled past its lease while another failed
and refunded the job ends up with what the store holds: no charge, no SUCCEEDED, and
no ``Completed`` event for anyone.

A result is written readable but not yet durable (:class:`~.results.ResultWriter`), and
is made durable here, after its success is recorded and told and before it is charged:
the caller hears ``Completed`` a disk flush sooner, and no job is ever charged for a
result that is not on disk — one whose flush failed, or one lost with its machine before
the charge, is refunded (:meth:`Settlement.settle_orphans` checks the same after a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from ..clock import Clock
from ..errors import Cancelled, DeadlineExceeded, RetouchError, Unavailable, status_code_name
from ..policy import Ledger
from ..storage import ObjectNotFound, ObjectStore
from ..telemetry import job_finished
from .live import LiveJob
from .records import JobRecord, JobState, ResultRecord
from .store import JobStore

log = logging.getLogger(__name__)

OK = status_pb2.Status(code=0)

ORPHAN_GRACE_S = 60.0
"""Age after which a reservation with no job record is treated as orphaned."""

ENDED_ELSEWHERE_WAIT_S = 10.0
"""How long a replica that lost a job to another waits to read how that one ended it.
The other records the end right after taking the job over, within milliseconds."""

LOST_TO_ANOTHER_REPLICA = (
    "this replica lost its hold on the job before it finished (its lease ran out and "
    "another replica ended it); submit it again with a new request_id"
)


class JobEnded(RetouchError):
    """A followed job ended without success; carries its recorded status."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status
        self.code = grpc.StatusCode.UNKNOWN

    def to_status(self) -> grpc.Status:
        return rpc_status.to_status(self.status)

    def to_status_proto(self) -> status_pb2.Status:
        return self.status


def terminal(
    record: JobRecord, error: RetouchError | None, now: float, last_seq: int
) -> tuple[JobRecord, status_pb2.Status]:
    """The record of a job that ended with ``error`` (None for success), and its status."""
    if error is None:
        return (
            dataclasses.replace(
                record, state=JobState.SUCCEEDED, updated_at=now, last_seq=last_seq
            ),
            OK,
        )
    status = error.to_status_proto()
    cancelled = isinstance(error, Cancelled | DeadlineExceeded)
    final = dataclasses.replace(
        record,
        state=JobState.CANCELLED if cancelled else JobState.FAILED,
        updated_at=now,
        last_seq=last_seq,
        error_code=status_code_name(status.code),
        error_message=status.message,
        final_status=status.SerializeToString(),
        cost_credits=0,
    )
    return final, status


def recorded_status(record: JobRecord) -> status_pb2.Status:
    """The status a finished job ended with."""
    return status_pb2.Status.FromString(record.final_status) if record.final_status else OK


class Settlement:
    """Ends jobs: one terminal state, then one ledger move."""

    def __init__(self, store: JobStore, ledger: Ledger, objects: ObjectStore, clock: Clock) -> None:
        self._store = store
        self._ledger = ledger
        self._objects = objects
        self._clock = clock

    async def settle(
        self, job: JobRecord, error: RetouchError | None, live: LiveJob
    ) -> status_pb2.Status:
        """Record how ``job``, running as ``live``, ended and charge or refund it; returns
        its final status: the one the store holds.

        A success is recorded first, with its ``Completed`` event (and any other event not
        yet in the store) in the same write, then told to the followers here, then its
        result made durable and charged, so a job that another replica failed meanwhile
        is never charged nor seen to succeed; a failure is refunded first and recorded
        after, so whoever sees it ended — on any replica — sees it refunded. A failure to
        record is logged, not raised: the sweeper settles the reservation from the job's
        recorded state later.
        """
        closing = live.begin_settling(succeeded=error is None)
        last_seq = closing[-1][0] if closing else live.last_seq
        final, status = terminal(job, error, self._clock.now(), last_seq)
        try:
            if error is not None:
                await self._refund(final)
            if not await self._store.finish(final, events=closing):
                # Taken over, failed and refunded by another replica that saw its lease
                # expire while this one stalled.
                log.warning("job %s: ended elsewhere; not settling it here", final.job_id)
                return await self._status_held(final.job_id)
            job_finished(final)
            if error is None:
                live.succeeded()
                await self._charge(final, live.result)
        except Exception:
            log.exception("job %s: recording its end failed", final.job_id)
        return status

    async def _charge(self, final: JobRecord, result: ResultRecord | None) -> None:
        """Commit a success's hold once its result is durable; refund it when the
        result is gone or cannot be made durable (the caller may have it, but it may
        not survive)."""
        if result is not None and await self._durable(result):
            await self._ledger.commit(final.job_id, final.cost_credits, now=self._clock.now())
        else:
            await self._ledger.release(final.job_id, now=self._clock.now(), note="result lost")
            await self._store.clear_charge(final.job_id)

    async def _durable(self, result: ResultRecord) -> bool:
        try:
            await self._objects.sync(result.object_key)
        except ObjectNotFound:
            log.error("job %s: its result %s is gone", result.job_id, result.object_key)
            return False
        except Exception:
            log.exception("job %s: its result could not be made durable", result.job_id)
            return False
        return True

    async def _status_held(self, job_id: str) -> status_pb2.Status:
        """The final status the store holds for a job another replica is ending; an
        UNAVAILABLE of our own if it cannot be read in time."""
        with contextlib.suppress(TimeoutError):
            async with (
                asyncio.timeout(ENDED_ELSEWHERE_WAIT_S),
                contextlib.aclosing(self._store.watch_events(job_id)) as changes,
            ):
                async for _ in changes:
                    record = await self._store.get_job(job_id)
                    if record is None:
                        break
                    if record.state.terminal:
                        return recorded_status(record)
        return Unavailable(LOST_TO_ANOTHER_REPLICA).to_status_proto()

    async def fail_abandoned(self, job: JobRecord, reason: RetouchError, *, holder: str) -> bool:
        """Fail and refund a job that its replica stopped running (its lease expired) and
        that ``holder``, this replica, took over (:meth:`JobStore.take_over`). True when
        this call recorded its end.

        Refunded before it is recorded as failed, like every failure: a reservation is
        settled at most once, so a second refund changes nothing. Its old holder can no
        longer finish it, so it can no longer be charged either. ``job`` is the record as
        it expired: the final one keeps naming the replica that ran it, and its last lease.
        """
        final, _ = terminal(job, reason, self._clock.now(), job.last_seq)
        await self._refund(final)
        if not await self._store.finish(final, holder=holder):
            return False
        job_finished(final)
        return True

    async def _refund(self, final: JobRecord) -> None:
        await self._ledger.release(final.job_id, now=self._clock.now(), note=final.error_code)

    async def settle_orphans(
        self, running_here: frozenset[str] | set[str], grace_s: float = ORPHAN_GRACE_S
    ) -> int:
        """Settle held reservations whose job is not running here: charge succeeded jobs,
        refund the rest. Covers a crash between a job's end and its settlement."""
        now = self._clock.now()
        settled = 0
        for reservation in await self._ledger.held_reservations():
            if reservation.job_id in running_here:
                continue
            record = await self._store.get_job(reservation.job_id)
            if record is None:
                if now - reservation.created_at < grace_s:
                    continue
                await self._ledger.release(reservation.job_id, now=now, note="orphaned reservation")
            elif record.state is JobState.SUCCEEDED:
                # Its replica died after recording the success, perhaps before the
                # result was durable.
                await self._charge(record, await self._store.get_result(record.result_id))
            elif record.state.terminal:
                await self._ledger.release(reservation.job_id, now=now, note=record.error_code)
            else:
                continue
            settled += 1
        if settled:
            log.warning("settled %d orphaned reservation(s)", settled)
        return settled
