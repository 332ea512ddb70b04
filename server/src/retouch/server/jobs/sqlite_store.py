"""The embedded job store, in SQLite.

SQLite calls are sub-millisecond in WAL mode, so they run on the event loop thread and
never hold a transaction across an ``await``. Each method is one statement or one
``BEGIN IMMEDIATE`` transaction, so it is atomic against other connections to the same
file as well; wake-ups stay in this process, which is the one replica SQLite serves.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from ..database.migrations import migrate_sqlite
from ..database.signals import Signals
from ..database.sqlite import connect_sqlite, transaction
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

_INSERT_JOB = f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({', '.join('?' * len(JOB_FIELDS))})"
_INSERT_JOB_ONCE = (
    f"{_INSERT_JOB} ON CONFLICT (owner, request_id) WHERE {HAS_REQUEST_ID} DO NOTHING"
)
FIND_BY_REQUEST = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ? AND request_id = ? AND {HAS_REQUEST_ID}"
)
_SET_MUTABLE = ", ".join(f"{name} = ?" for name in MUTABLE_FIELDS)
_UPDATE_HELD = (
    f"UPDATE jobs SET {_SET_MUTABLE} WHERE job_id = ? AND {UNFINISHED} AND replica_id = ?"
)
# OR IGNORE: a write retried after one that went in unbeknown to the caller adds nothing.
_INSERT_EVENT = "INSERT OR IGNORE INTO job_events (job_id, seq, payload) VALUES (?, ?, ?)"
_CLEAR_CHARGE = "UPDATE jobs SET cost_credits = 0 WHERE job_id = ? AND state = 'succeeded'"
_ADVANCE_LAST_SEQ = "UPDATE jobs SET last_seq = max(last_seq, ?) WHERE job_id = ?"
"""Run with each append, so that GetJob of a running job, or of one failed after its
replica died, names the last event recorded."""
_RENEW_LEASES = (
    "UPDATE jobs SET lease_until = ? WHERE job_id IN (SELECT value FROM json_each(?)) "
    f"AND replica_id = ? AND {UNFINISHED} RETURNING job_id, cancel_requested"
)
_TAKE_OVER = (
    f"UPDATE jobs SET replica_id = ?, lease_until = ? WHERE job_id = ? AND {UNFINISHED} "
    "AND lease_until < ?"
)


class SqliteJobStore:
    """The embedded job store (see the module docstring for its atomicity)."""

    def __init__(self, connection: sqlite3.Connection, signals: Signals | None = None) -> None:
        """Use a connection whose database is migrated (:func:`migrate_sqlite`)."""
        self._db = connection
        self._signals = signals or Signals()

    @classmethod
    def open(cls, path: Path | str) -> SqliteJobStore:
        """A store on its own connection to ``path``, migrated to the current schema."""
        connection = connect_sqlite(path)
        migrate_sqlite(connection)
        return cls(connection)

    async def create_or_get(self, job: JobRecord) -> tuple[JobRecord, bool]:
        if not job.request_id:
            self._db.execute(_INSERT_JOB, job_values(job))
            return job, True
        if self._db.execute(_INSERT_JOB_ONCE, job_values(job)).rowcount == 1:
            return job, True
        existing = await self.find_by_request(job.owner, job.request_id)
        assert existing is not None  # rows are never deleted, and the insert conflicted
        return existing, False

    async def get_job(self, job_id: str) -> JobRecord | None:
        row = self._db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return job_from_row(row) if row else None

    async def find_by_request(self, owner: str, request_id: str) -> JobRecord | None:
        row = self._db.execute(FIND_BY_REQUEST, (owner, request_id)).fetchone()
        return job_from_row(row) if row else None

    async def list_jobs(
        self, owner: str, *, state: JobState | None, before_id: str | None, limit: int
    ) -> Sequence[JobRecord]:
        sql = f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ?"
        args: list[object] = [owner]
        if state is not None:
            sql += " AND state = ?"
            args.append(state.value)
        if before_id:
            sql += " AND job_id < ?"
            args.append(before_id)
        sql += " ORDER BY job_id DESC LIMIT ?"
        args.append(limit)
        return [job_from_row(row) for row in self._db.execute(sql, args)]

    async def update_job(self, job: JobRecord) -> bool:
        require_unfinished(job)
        return self._update_held(job, job.replica_id)

    async def finish(
        self, job: JobRecord, *, events: Sequence[tuple[int, bytes]] = (), holder: str | None = None
    ) -> bool:
        require_terminal(job)
        with transaction(self._db):
            finished = self._update_held(job, job.replica_id if holder is None else holder)
            if finished:
                self._db.executemany(
                    _INSERT_EVENT, [(job.job_id, seq, payload) for seq, payload in events]
                )
        if finished:
            self._signals.job_changed(job.job_id)
        return finished

    def _update_held(self, job: JobRecord, holder: str) -> bool:
        cursor = self._db.execute(_UPDATE_HELD, [*mutable_values(job), job.job_id, holder])
        return cursor.rowcount == 1

    async def renew_leases(
        self, replica_id: str, job_ids: Sequence[str], until: float
    ) -> LeaseRenewal:
        rows = self._db.execute(
            _RENEW_LEASES, (until, json.dumps(list(job_ids)), replica_id)
        ).fetchall()
        return LeaseRenewal(
            renewed=frozenset(job_id for job_id, _ in rows),
            cancel_requested=frozenset(job_id for job_id, cancel in rows if cancel),
        )

    async def take_over(self, job_id: str, replica_id: str, *, now: float, until: float) -> bool:
        return self._db.execute(_TAKE_OVER, (replica_id, until, job_id, now)).rowcount == 1

    async def expired_jobs(self, now: float) -> Sequence[JobRecord]:
        rows = self._db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {UNFINISHED} AND lease_until < ?", (now,)
        )
        return [job_from_row(row) for row in rows]

    async def append_event(self, job_id: str, seq: int, data: bytes) -> None:
        await self.append_events(job_id, [(seq, data)])

    async def append_events(self, job_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        if not events:
            return
        with transaction(self._db):
            self._db.executemany(_INSERT_EVENT, [(job_id, seq, payload) for seq, payload in events])
            self._db.execute(_ADVANCE_LAST_SEQ, (max(seq for seq, _ in events), job_id))
        self._signals.job_changed(job_id)

    async def events_after(self, job_id: str, after_seq: int) -> Sequence[bytes]:
        rows = self._db.execute(
            "SELECT payload FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq",
            (job_id, after_seq),
        )
        return [bytes(row[0]) for row in rows]

    def watch_events(self, job_id: str) -> AsyncGenerator[None, None]:
        return self._signals.watch(job_id)

    async def clear_charge(self, job_id: str) -> None:
        self._db.execute(_CLEAR_CHARGE, (job_id,))

    async def request_cancel(self, job_id: str) -> bool:
        cursor = self._db.execute(
            f"UPDATE jobs SET cancel_requested = 1 WHERE job_id = ? AND {UNFINISHED}", (job_id,)
        )
        if cursor.rowcount != 1:
            return False
        self._signals.cancel_requested(job_id)
        self._signals.job_changed(job_id)
        return True

    def cancel_requests(self) -> AsyncGenerator[str, None]:
        return self._signals.cancels()

    async def unfinished_jobs(self) -> Sequence[JobRecord]:
        rows = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {UNFINISHED}")
        return [job_from_row(row) for row in rows]

    async def add_result(self, result: ResultRecord) -> None:
        self._db.execute(
            f"INSERT INTO results ({RESULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            result_values(result),
        )

    async def get_result(self, result_id: str) -> ResultRecord | None:
        row = self._db.execute(
            f"SELECT {RESULT_COLUMNS} FROM results WHERE result_id = ?", (result_id,)
        ).fetchone()
        return ResultRecord(*row) if row else None

    async def expired_results(self, now: float) -> Sequence[ResultRecord]:
        rows = self._db.execute(
            f"SELECT {RESULT_COLUMNS} FROM results WHERE expires_at > 0 AND expires_at <= ?",
            (now,),
        )
        return [ResultRecord(*row) for row in rows]

    async def delete_result(self, result_id: str) -> None:
        self._db.execute("DELETE FROM results WHERE result_id = ?", (result_id,))

    async def add_upload(self, upload: UploadRecord) -> None:
        self._db.execute(
            f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            upload_values(upload),
        )

    async def get_upload(self, upload_id: str) -> UploadRecord | None:
        row = self._db.execute(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?", (upload_id,)
        ).fetchone()
        return UploadRecord(*row) if row else None

    async def expired_uploads(self, now: float) -> Sequence[UploadRecord]:
        rows = self._db.execute(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE expires_at <= ?", (now,)
        )
        return [UploadRecord(*row) for row in rows]

    async def delete_upload(self, upload_id: str) -> None:
        self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    async def close(self) -> None:
        self._db.close()
