"""Rows of the job store, as plain frozen dataclasses."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class JobState(enum.Enum):
    """Life of a job; the last three are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """A stored result image and who owns it."""

    result_id: str
    job_id: str
    owner: str
    object_key: str
    content_type: str
    format: str
    width: int
    height: int
    size_bytes: int
    created_at: float
    expires_at: float = 0.0
    """When the plan's retention ends and the result is deleted; 0 keeps it."""


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """A short-lived uploaded input."""

    upload_id: str
    owner: str
    object_key: str
    size_bytes: int
    sha256: str
    content_type: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as stored. ``final_status`` is a serialized ``google.rpc.Status`` for
    failed and cancelled jobs, so WatchJob can end replays with the original status."""

    job_id: str
    owner: str
    subject: str
    request_id: str
    fingerprint: str
    operation: str
    state: JobState
    provider: str
    model: str
    seed: int
    created_at: float
    updated_at: float
    result_id: str = ""
    error_code: str = ""
    error_message: str = ""
    final_status: bytes = b""
    last_seq: int = 0
    cost_credits: int = 0
