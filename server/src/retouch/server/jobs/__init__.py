"""Jobs: their records and their stores. Execution lives in ``jobs.manager``; the
PostgreSQL store in ``jobs.postgres_store``, imported only where a database URL names it."""

from .records import JobRecord, JobState, ResultRecord, UploadRecord
from .sqlite_store import SqliteJobStore
from .store import JobStore

__all__ = [
    "JobRecord",
    "JobState",
    "JobStore",
    "ResultRecord",
    "SqliteJobStore",
    "UploadRecord",
]
