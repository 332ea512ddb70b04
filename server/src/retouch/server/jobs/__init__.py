"""Jobs: their records and their stores. Execution lives in ``jobs.manager``."""

from .postgres_store import PostgresJobStore
from .records import JobRecord, JobState, ResultRecord, UploadRecord
from .sqlite_store import SqliteJobStore
from .store import JobStore

__all__ = [
    "JobRecord",
    "JobState",
    "JobStore",
    "PostgresJobStore",
    "ResultRecord",
    "SqliteJobStore",
    "UploadRecord",
]
