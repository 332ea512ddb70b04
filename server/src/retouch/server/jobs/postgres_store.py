"""The shared job store, in PostgreSQL, for several replicas.

Each method is one statement, so one transaction, through an asyncpg pool. Wake-ups
travel as ``pg_notify`` inside the statement that writes the event or the final state
(see :mod:`..database.postgres` for why LISTEN/NOTIFY), and come back to every replica,
this one included, through its :class:`~..database.postgres.Listener`; the cancel
requests whose NOTIFY a dropped LISTEN connection lost are repeated from the table once it
is back.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from ..database.migrations import migrate_postgres
from ..database.postgres import (
    CANCELS_CHANNEL,
    EVENTS_CHANNEL,
    BoundedPool,
    Listener,
    create_pool,
)
from ..database.signals import Signals
from .columns import (
    HAS_REQUEST_ID,
    JOB_COLUMNS,
    JOB_FIELDS,
    MUTABLE_FIELDS,
    RESULT_COLUMNS,
    UNFINISHED,
    UPLOAD_COLUMNS,
    job_from_row,
    job_values,
    mutable_values,
    result_values,
    upload_values,
)
from .records import JobRecord, JobState, ResultRecord, UploadRecord
from .store import LeaseRenewal, require_terminal, require_unfinished


def _placeholders(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


_INSERT_JOB = f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({_placeholders(len(JOB_FIELDS))})"
_INSERT_JOB_ONCE = (
    f"{_INSERT_JOB} ON CONFLICT (owner, request_id) WHERE {HAS_REQUEST_ID} DO NOTHING "
    "RETURNING job_id"
)
FIND_BY_REQUEST = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = $1 AND request_id = $2 AND {HAS_REQUEST_ID}"
)
_EVENT_WRITTEN_BEFORE = "ON CONFLICT (job_id, seq) DO NOTHING"
"""A write of events retried after a timeout may find them in: the first had committed."""
_SET_MUTABLE = ", ".join(f"{name} = ${i}" for i, name in enumerate(MUTABLE_FIELDS, 1))
_JOB_ID = f"${len(MUTABLE_FIELDS) + 1}"
_HOLDER = f"${len(MUTABLE_FIELDS) + 2}"
_UPDATE_HELD = (
    f"UPDATE jobs SET {_SET_MUTABLE} "
    f"WHERE job_id = {_JOB_ID} AND {UNFINISHED} AND replica_id = {_HOLDER}"
)
_FINISH = (
    # The last events go in only if the compare-and-set won: a job that another replica
    # ended keeps the events it had, and never shows a Completed from this one.
    f"WITH finished AS ({_UPDATE_HELD} RETURNING job_id), "
    "appended AS (INSERT INTO job_events (job_id, seq, payload) "
    f"SELECT finished.job_id, e.seq, e.payload FROM finished, "
    f"unnest(${len(MUTABLE_FIELDS) + 3}::integer[], ${len(MUTABLE_FIELDS) + 4}::bytea[]) "
    f"AS e (seq, payload) {_EVENT_WRITTEN_BEFORE}) "
    f"SELECT job_id, pg_notify('{EVENTS_CHANNEL}', job_id) FROM finished"
)
_RENEW_LEASES = (
    "UPDATE jobs SET lease_until = $1 WHERE job_id = ANY($2::text[]) "
    f"AND replica_id = $3 AND {UNFINISHED} RETURNING job_id, cancel_requested"
)
_TAKE_OVER = (
    f"UPDATE jobs SET replica_id = $2, lease_until = $3 WHERE job_id = $1 AND {UNFINISHED} "
    "AND lease_until < $4"
)
_PENDING_CANCELS = f"SELECT job_id FROM jobs WHERE cancel_requested AND {UNFINISHED}"
# Each append also advances the job's last_seq, so that GetJob of a running job, or of one
# failed after its replica died, names the last event recorded.
_APPEND_EVENT = (
    "WITH appended AS (INSERT INTO job_events (job_id, seq, payload) VALUES ($1, $2, $3) "
    f"{_EVENT_WRITTEN_BEFORE} RETURNING job_id), "
    "advanced AS (UPDATE jobs SET last_seq = GREATEST(last_seq, $2) WHERE job_id = $1) "
    f"SELECT pg_notify('{EVENTS_CHANNEL}', job_id) FROM appended"
)
_APPEND_EVENTS = (
    "WITH appended AS (INSERT INTO job_events (job_id, seq, payload) "
    "SELECT $1, seq, payload FROM unnest($2::integer[], $3::bytea[]) AS e (seq, payload) "
    f"{_EVENT_WRITTEN_BEFORE} RETURNING job_id), "
    "advanced AS (UPDATE jobs SET last_seq = GREATEST(last_seq, "
    "(SELECT max(seq) FROM unnest($2::integer[]) AS e (seq))) WHERE job_id = $1) "
    f"SELECT pg_notify('{EVENTS_CHANNEL}', $1) WHERE EXISTS (SELECT 1 FROM appended)"
)
_REQUEST_CANCEL = (
    f"WITH flagged AS (UPDATE jobs SET cancel_requested = TRUE WHERE job_id = $1 AND {UNFINISHED} "
    f"RETURNING job_id) SELECT pg_notify('{CANCELS_CHANNEL}', job_id), "
    f"pg_notify('{EVENTS_CHANNEL}', job_id) FROM flagged"
)


async def _repeat_pending_cancels(pool: BoundedPool, signals: Signals) -> None:
    """Tell this replica again of every pending cancel request: the NOTIFY of one made
    while its LISTEN connection was down never reached it."""
    for row in await pool.fetch(_PENDING_CANCELS):
        signals.cancel_requested(row["job_id"])


class PostgresJobStore:
    """The shared job store (see the module docstring for its atomicity)."""

    def __init__(
        self,
        pool: BoundedPool,
        listener: Listener,
        signals: Signals,
        migrated: tuple[int, ...] = (),
    ) -> None:
        """Take over ``pool`` and ``listener`` (closed by :meth:`close`); the database must
        be migrated (:func:`migrate_postgres`) and ``listener`` must feed ``signals``."""
        self.pool = pool
        self.migrated = migrated
        """The schema versions :meth:`open` applied."""
        self._listener = listener
        self._signals = signals

    @classmethod
    async def open(cls, dsn: str, *, pool_size: int, timeout_s: float) -> PostgresJobStore:
        """Connect to ``dsn``, migrate its schema, and start listening for wake-ups; every
        later use of the pool is bounded by ``timeout_s`` (see :class:`BoundedPool`)."""
        raw = await create_pool(dsn, max_size=pool_size)
        pool = BoundedPool(raw, timeout_s=timeout_s)
        try:
            async with raw.acquire() as connection:
                migrated = await migrate_postgres(connection)
            signals = Signals()
            listener = Listener(dsn, signals, resync=lambda: _repeat_pending_cancels(pool, signals))
            await listener.start()
        except BaseException:
            await pool.close()
            raise
        return cls(pool, listener, signals, tuple(migrated))

    async def create_or_get(self, job: JobRecord) -> tuple[JobRecord, bool]:
        if not job.request_id:
            await self.pool.execute(_INSERT_JOB, *job_values(job))
            return job, True
        # ON CONFLICT waits for a concurrent inserter to commit or roll back, so when it
        # reports a conflict the row it conflicted with is committed and visible below.
        if await self.pool.fetchval(_INSERT_JOB_ONCE, *job_values(job)) is not None:
            return job, True
        existing = await self.find_by_request(job.owner, job.request_id)
        assert existing is not None  # rows are never deleted, and the insert conflicted
        return existing, False

    async def get_job(self, job_id: str) -> JobRecord | None:
        row = await self.pool.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1", job_id)
        return job_from_row(row) if row else None

    async def find_by_request(self, owner: str, request_id: str) -> JobRecord | None:
        row = await self.pool.fetchrow(FIND_BY_REQUEST, owner, request_id)
        return job_from_row(row) if row else None

    async def list_jobs(
        self, owner: str, *, state: JobState | None, before_id: str | None, limit: int
    ) -> Sequence[JobRecord]:
        sql = f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = $1"
        args: list[object] = [owner]
        if state is not None:
            args.append(state.value)
            sql += f" AND state = ${len(args)}"
        if before_id:
            args.append(before_id)
            sql += f" AND job_id < ${len(args)}"
        args.append(limit)
        sql += f" ORDER BY job_id DESC LIMIT ${len(args)}"
        return [job_from_row(row) for row in await self.pool.fetch(sql, *args)]

    async def update_job(self, job: JobRecord) -> bool:
        require_unfinished(job)
        status = await self.pool.execute(
            _UPDATE_HELD, *mutable_values(job), job.job_id, job.replica_id
        )
        return status == "UPDATE 1"

    async def finish(
        self, job: JobRecord, *, events: Sequence[tuple[int, bytes]] = (), holder: str | None = None
    ) -> bool:
        require_terminal(job)
        rows = await self.pool.fetch(
            _FINISH,
            *mutable_values(job),
            job.job_id,
            job.replica_id if holder is None else holder,
            [seq for seq, _ in events],
            [payload for _, payload in events],
        )
        return len(rows) == 1

    async def renew_leases(
        self, replica_id: str, job_ids: Sequence[str], until: float
    ) -> LeaseRenewal:
        rows = await self.pool.fetch(_RENEW_LEASES, until, list(job_ids), replica_id)
        return LeaseRenewal(
            renewed=frozenset(row["job_id"] for row in rows),
            cancel_requested=frozenset(row["job_id"] for row in rows if row["cancel_requested"]),
        )

    async def take_over(self, job_id: str, replica_id: str, *, now: float, until: float) -> bool:
        status = await self.pool.execute(_TAKE_OVER, job_id, replica_id, until, now)
        return status == "UPDATE 1"

    async def expired_jobs(self, now: float) -> Sequence[JobRecord]:
        rows = await self.pool.fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {UNFINISHED} AND lease_until < $1", now
        )
        return [job_from_row(row) for row in rows]

    async def append_event(self, job_id: str, seq: int, data: bytes) -> None:
        await self.pool.execute(_APPEND_EVENT, job_id, seq, data)

    async def append_events(self, job_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        if events:
            seqs, payloads = zip(*events, strict=True)
            await self.pool.execute(_APPEND_EVENTS, job_id, list(seqs), list(payloads))

    async def events_after(self, job_id: str, after_seq: int) -> Sequence[bytes]:
        rows = await self.pool.fetch(
            "SELECT payload FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq",
            job_id,
            after_seq,
        )
        return [bytes(row[0]) for row in rows]

    def watch_events(self, job_id: str) -> AsyncGenerator[None, None]:
        return self._signals.watch(job_id)

    async def clear_charge(self, job_id: str) -> None:
        await self.pool.execute(
            "UPDATE jobs SET cost_credits = 0 WHERE job_id = $1 AND state = 'succeeded'", job_id
        )

    async def request_cancel(self, job_id: str) -> bool:
        return bool(await self.pool.fetch(_REQUEST_CANCEL, job_id))

    def cancel_requests(self) -> AsyncGenerator[str, None]:
        return self._signals.cancels()

    async def unfinished_jobs(self) -> Sequence[JobRecord]:
        rows = await self.pool.fetch(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {UNFINISHED}")
        return [job_from_row(row) for row in rows]

    async def add_result(self, result: ResultRecord) -> None:
        await self.pool.execute(
            f"INSERT INTO results ({RESULT_COLUMNS}) VALUES ({_placeholders(11)})",
            *result_values(result),
        )

    async def get_result(self, result_id: str) -> ResultRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {RESULT_COLUMNS} FROM results WHERE result_id = $1", result_id
        )
        return ResultRecord(*row) if row else None

    async def expired_results(self, now: float) -> Sequence[ResultRecord]:
        rows = await self.pool.fetch(
            f"SELECT {RESULT_COLUMNS} FROM results WHERE expires_at > 0 AND expires_at <= $1",
            now,
        )
        return [ResultRecord(*row) for row in rows]

    async def delete_result(self, result_id: str) -> None:
        await self.pool.execute("DELETE FROM results WHERE result_id = $1", result_id)

    async def add_upload(self, upload: UploadRecord) -> None:
        await self.pool.execute(
            f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ({_placeholders(7)})",
            *upload_values(upload),
        )

    async def get_upload(self, upload_id: str) -> UploadRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = $1", upload_id
        )
        return UploadRecord(*row) if row else None

    async def expired_uploads(self, now: float) -> Sequence[UploadRecord]:
        rows = await self.pool.fetch(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE expires_at <= $1", now
        )
        return [UploadRecord(*row) for row in rows]

    async def delete_upload(self, upload_id: str) -> None:
        await self.pool.execute("DELETE FROM uploads WHERE upload_id = $1", upload_id)

    async def close(self) -> None:
        await self._listener.close()
        await self.pool.close()
