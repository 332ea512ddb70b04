"""Jobs: their records and their store. Execution lives in ``jobs.manager``."""

from .records import JobRecord, JobState, ResultRecord, UploadRecord
from .store import DuplicateRequest, JobStore, SqliteJobStore

__all__ = [
    "DuplicateRequest",
    "JobRecord",
    "JobState",
    "JobStore",
    "ResultRecord",
    "SqliteJobStore",
    "UploadRecord",
]
