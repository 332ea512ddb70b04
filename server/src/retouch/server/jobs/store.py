"""Persistent state of jobs, their events, uploads and results.

``JobStore`` is the interface; :class:`SqliteJobStore` is the embedded default. SQLite
calls are sub-millisecond in WAL mode, so they run on the event loop thread: that keeps
every read-modify-write atomic without locks, and avoids a thread hop per call.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, cast

from .records import JobRecord, JobState, ResultRecord, UploadRecord


class DuplicateRequest(Exception):
    """A job with this owner and request_id exists already."""

    def __init__(self, existing: JobRecord) -> None:
        super().__init__(existing.job_id)
        self.existing = existing


class JobStore(Protocol):
    """Where jobs, events, uploads and results are recorded."""

    async def create_job(self, job: JobRecord) -> None:
        """Insert a new job; raise :class:`DuplicateRequest` if its request_id is taken."""

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def find_by_request(self, owner: str, request_id: str) -> JobRecord | None: ...

    async def list_jobs(
        self, owner: str, *, state: JobState | None, before_id: str | None, limit: int
    ) -> Sequence[JobRecord]:
        """The owner's jobs with ids below ``before_id``, newest first."""

    async def update_job(self, job: JobRecord) -> None: ...

    async def append_events(self, job_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        """Record a job's events ``(seq, payload)`` in one write."""

    async def events_after(self, job_id: str, after_seq: int) -> Sequence[bytes]: ...

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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    subject TEXT NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    operation TEXT NOT NULL,
    state TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    seed INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    result_id TEXT NOT NULL,
    error_code TEXT NOT NULL,
    error_message TEXT NOT NULL,
    final_status BLOB NOT NULL,
    last_seq INTEGER NOT NULL,
    cost_credits INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_request ON jobs (owner, request_id) WHERE request_id != '';
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, job_id);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (state) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    result_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    object_key TEXT NOT NULL,
    content_type TEXT NOT NULL,
    format TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_expiry ON results (expires_at) WHERE expires_at > 0;
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    object_key TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_expiry ON uploads (expires_at);
"""

_JOB_COLUMNS = (
    "job_id, owner, subject, request_id, fingerprint, operation, state, provider, model, "
    "seed, created_at, updated_at, result_id, error_code, error_message, final_status, "
    "last_seq, cost_credits"
)


_RESULT_COLUMNS = (
    "result_id, job_id, owner, object_key, content_type, format, width, height, "
    "size_bytes, created_at, expires_at"
)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on an autocommit connection; ROLLBACK on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def connect_sqlite(path: Path | str) -> sqlite3.Connection:
    """A connection tuned for one writer process: WAL, NORMAL sync, autocommit."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


class SqliteJobStore:
    """The embedded job store."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._db.executescript(_SCHEMA)

    @classmethod
    def open(cls, path: Path | str) -> SqliteJobStore:
        return cls(connect_sqlite(path))

    async def create_job(self, job: JobRecord) -> None:
        try:
            self._db.execute(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                _job_row(job),
            )
        except sqlite3.IntegrityError:
            existing = await self.find_by_request(job.owner, job.request_id)
            if existing is None:
                raise
            raise DuplicateRequest(existing) from None

    async def get_job(self, job_id: str) -> JobRecord | None:
        row = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return _job(row) if row else None

    async def find_by_request(self, owner: str, request_id: str) -> JobRecord | None:
        row = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ? AND request_id = ?",
            (owner, request_id),
        ).fetchone()
        return _job(row) if row else None

    async def list_jobs(
        self, owner: str, *, state: JobState | None, before_id: str | None, limit: int
    ) -> Sequence[JobRecord]:
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ?"
        args: list[object] = [owner]
        if state is not None:
            sql += " AND state = ?"
            args.append(state.value)
        if before_id:
            sql += " AND job_id < ?"
            args.append(before_id)
        sql += " ORDER BY job_id DESC LIMIT ?"
        args.append(limit)
        return [_job(row) for row in self._db.execute(sql, args)]

    async def update_job(self, job: JobRecord) -> None:
        self._db.execute(
            "UPDATE jobs SET state = ?, provider = ?, model = ?, seed = ?, updated_at = ?, "
            "result_id = ?, error_code = ?, error_message = ?, final_status = ?, "
            "last_seq = ?, cost_credits = ? WHERE job_id = ?",
            (
                job.state.value,
                job.provider,
                job.model,
                job.seed,
                job.updated_at,
                job.result_id,
                job.error_code,
                job.error_message,
                job.final_status,
                job.last_seq,
                job.cost_credits,
                job.job_id,
            ),
        )

    async def append_events(self, job_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        with transaction(self._db):
            self._db.executemany(
                "INSERT INTO job_events (job_id, seq, payload) VALUES (?, ?, ?)",
                [(job_id, seq, payload) for seq, payload in events],
            )

    async def events_after(self, job_id: str, after_seq: int) -> Sequence[bytes]:
        rows = self._db.execute(
            "SELECT payload FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq",
            (job_id, after_seq),
        )
        return [bytes(row[0]) for row in rows]

    async def unfinished_jobs(self) -> Sequence[JobRecord]:
        rows = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running')"
        )
        return [_job(row) for row in rows]

    async def add_result(self, result: ResultRecord) -> None:
        self._db.execute(
            "INSERT INTO results (result_id, job_id, owner, object_key, content_type, format, "
            "width, height, size_bytes, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                result.result_id,
                result.job_id,
                result.owner,
                result.object_key,
                result.content_type,
                result.format,
                result.width,
                result.height,
                result.size_bytes,
                result.created_at,
                result.expires_at,
            ),
        )

    async def get_result(self, result_id: str) -> ResultRecord | None:
        row = self._db.execute(
            f"SELECT {_RESULT_COLUMNS} FROM results WHERE result_id = ?", (result_id,)
        ).fetchone()
        return ResultRecord(*row) if row else None

    async def expired_results(self, now: float) -> Sequence[ResultRecord]:
        rows = self._db.execute(
            f"SELECT {_RESULT_COLUMNS} FROM results WHERE expires_at > 0 AND expires_at <= ?",
            (now,),
        )
        return [ResultRecord(*row) for row in rows]

    async def delete_result(self, result_id: str) -> None:
        self._db.execute("DELETE FROM results WHERE result_id = ?", (result_id,))

    async def add_upload(self, upload: UploadRecord) -> None:
        self._db.execute(
            "INSERT INTO uploads (upload_id, owner, object_key, size_bytes, sha256, "
            "content_type, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                upload.upload_id,
                upload.owner,
                upload.object_key,
                upload.size_bytes,
                upload.sha256,
                upload.content_type,
                upload.expires_at,
            ),
        )

    async def get_upload(self, upload_id: str) -> UploadRecord | None:
        row = self._db.execute(
            "SELECT upload_id, owner, object_key, size_bytes, sha256, content_type, expires_at "
            "FROM uploads WHERE upload_id = ?",
            (upload_id,),
        ).fetchone()
        return UploadRecord(*row) if row else None

    async def expired_uploads(self, now: float) -> Sequence[UploadRecord]:
        rows = self._db.execute(
            "SELECT upload_id, owner, object_key, size_bytes, sha256, content_type, expires_at "
            "FROM uploads WHERE expires_at <= ?",
            (now,),
        )
        return [UploadRecord(*row) for row in rows]

    async def delete_upload(self, upload_id: str) -> None:
        self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    async def close(self) -> None:
        self._db.close()


def _job_row(job: JobRecord) -> tuple[object, ...]:
    return (
        job.job_id,
        job.owner,
        job.subject,
        job.request_id,
        job.fingerprint,
        job.operation,
        job.state.value,
        job.provider,
        job.model,
        job.seed,
        job.created_at,
        job.updated_at,
        job.result_id,
        job.error_code,
        job.error_message,
        job.final_status,
        job.last_seq,
        job.cost_credits,
    )


def _job(row: Sequence[object]) -> JobRecord:
    values = list(row)
    values[6] = JobState(values[6])
    values[15] = bytes(cast(bytes, values[15]))
    return JobRecord(*values)  # type: ignore[arg-type]
