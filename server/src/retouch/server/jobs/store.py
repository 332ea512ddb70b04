"""Persistent state of jobs, their events, uploads and results: the ``JobStore`` interface.

Every method is atomic on its own, against every other connection and replica, and says
so where that matters: submission is one create-or-get; changing or finishing a job is one
compare-and-set from an unfinished state held by the replica that writes it, and taking
over an expired job is one compare-and-set on its lease, so a replica that stalled past
its lease can neither renew, change nor finish a job another replica took over; and a
job's events wake its watchers wherever they run. Two backends implement it:
:class:`~.sqlite_store.SqliteJobStore`, embedded, for one replica;
:class:`~.postgres_store.PostgresJobStore`, shared by several.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from .records import JobRecord, JobState, ResultRecord, UploadRecord


@dataclass(frozen=True, slots=True)
class LeaseRenewal:
    """What one lease renewal learned about the jobs it was asked to renew."""

    renewed: frozenset[str]
    """The jobs still unfinished and held by the renewing replica: their leases were
    extended. Any other job asked about is no longer that replica's to run."""
    cancel_requested: frozenset[str]
    """The renewed jobs whose cancellation has been requested (:meth:`JobStore.request_cancel`)."""


class JobStore(Protocol):
    """Where jobs, events, uploads and results are recorded."""

    async def create_or_get(self, job: JobRecord) -> tuple[JobRecord, bool]:
        """Insert ``job``, or find the job its owner already made with its request_id.

        Returns the stored job and whether this call created it. One atomic step keyed
        by ``(owner, request_id)`` when request_id is non-empty: concurrent duplicates,
        on one connection or on several replicas, make exactly one job and all of them
        get it back.
        """

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def find_by_request(self, owner: str, request_id: str) -> JobRecord | None: ...

    async def list_jobs(
        self, owner: str, *, state: JobState | None, before_id: str | None, limit: int
    ) -> Sequence[JobRecord]:
        """The owner's jobs with ids below ``before_id``, newest first."""

    async def update_job(self, job: JobRecord) -> bool:
        """Record a change to an unfinished job (provider and model on fallback, its lease,
        its deadline); ``job.state`` must not be terminal — use :meth:`finish`.

        A compare-and-set from an unfinished state held by ``job.replica_id``: returns
        False, changing nothing, when the job has finished meanwhile or another replica
        took it over. ``cancel_requested`` is not written, so a stale record cannot
        withdraw a cancel request.
        """

    async def finish(
        self, job: JobRecord, *, events: Sequence[tuple[int, bytes]] = (), holder: str | None = None
    ) -> bool:
        """Compare-and-set the job from QUEUED or RUNNING, held by ``holder`` (by default
        ``job.replica_id``), to ``job``'s terminal state, and record its last ``events``
        ``(seq, payload)`` in the same transaction.

        True when this call finished it. False when the job was already terminal —
        failed and refunded by another replica, say — or another replica took it over
        (:meth:`take_over`); then nothing changes, the events included: the caller must
        not charge it nor tell anyone it succeeded. Wakes the job's watchers.
        """

    async def renew_leases(
        self, replica_id: str, job_ids: Sequence[str], until: float
    ) -> LeaseRenewal:
        """Extend to ``until`` the leases ``replica_id`` holds on these unfinished jobs, and
        read which of them have a cancel request, in one statement. Jobs held by another
        replica, or finished, are left alone and missing from the renewal."""

    async def expired_jobs(self, now: float) -> Sequence[JobRecord]:
        """Unfinished jobs whose lease ended before ``now`` (a job never leased counts).

        A replica fails one only after :meth:`take_over`, so when several replicas see
        the same expired job only one of them fails and refunds it, and never one whose
        holder renewed it meanwhile.
        """

    async def take_over(self, job_id: str, replica_id: str, *, now: float, until: float) -> bool:
        """Make ``replica_id`` the holder of an unfinished job whose lease ended before
        ``now``, leased until ``until``; False, changing nothing, when it is not expired
        any more (renewed, finished, or taken by another replica).

        One compare-and-set on the lease: from then on its old holder's
        :meth:`renew_leases`, :meth:`update_job` and :meth:`finish` change nothing.
        """

    async def append_event(self, job_id: str, seq: int, data: bytes) -> None:
        """Record one event as it happens, and wake the job's watchers on every replica.

        The wake-up is part of the write's transaction: it is sent if and only if the
        event is stored.
        """

    async def append_events(self, job_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        """Record a job's events ``(seq, payload)`` in one write, then wake its watchers."""

    async def events_after(self, job_id: str, after_seq: int) -> Sequence[bytes]: ...

    def watch_events(self, job_id: str) -> AsyncGenerator[None, None]:
        """Yield at once, then again after each new event or state change of the job.

        The subscription starts before the first yield, so reading ``events_after`` and
        the job after each yield never misses a change. Wake-ups coalesce, and a yield
        may come with nothing new. The iterator never ends by itself: stop when the job
        is terminal, and close it (``contextlib.aclosing``) to unsubscribe.
        """

    async def clear_charge(self, job_id: str) -> None:
        """Record that a succeeded job was refunded after all (its result was lost before
        it could be charged): its ``cost_credits`` become 0. Other jobs are left alone."""

    async def request_cancel(self, job_id: str) -> bool:
        """Set the job's ``cancel_requested`` and tell the replica that runs it (through
        :meth:`cancel_requests`). False when the job is unknown or already finished."""

    def cancel_requests(self) -> AsyncGenerator[str, None]:
        """Ids of jobs whose cancellation is requested, from any replica, from the first
        ``__anext__`` on. Every replica gets every id; each acts on the jobs it runs.

        Fast but not certain: where wake-ups travel over a connection that can drop, the
        ids of every unfinished job with a pending request come again once it is back,
        and :meth:`renew_leases` reports them regardless."""

    async def unfinished_jobs(self) -> Sequence[JobRecord]: ...

    async def add_result(self, result: ResultRecord) -> None: ...

    async def get_result(self, result_id: str) -> ResultRecord | None: ...

    async def expired_results(self, now: float) -> Sequence[ResultRecord]:
        """Results whose retention has ended."""

    async def delete_result(self, result_id: str) -> None: ...

    async def add_upload(self, upload: UploadRecord) -> None: ...

    async def get_upload(self, upload_id: str) -> UploadRecord | None: ...

    async def expired_uploads(self, now: float) -> Sequence[UploadRecord]: ...

    async def delete_upload(self, upload_id: str) -> None: ...

    async def close(self) -> None: ...


def require_terminal(job: JobRecord) -> None:
    """Refuse to :meth:`JobStore.finish` a job with an unfinished state."""
    if not job.state.terminal:
        raise ValueError(f"finish needs a terminal state, not {job.state.value}")


def require_unfinished(job: JobRecord) -> None:
    """Refuse to :meth:`JobStore.update_job` a job into a terminal state."""
    if job.state.terminal:
        raise ValueError(f"update_job cannot record the terminal state {job.state.value}")
