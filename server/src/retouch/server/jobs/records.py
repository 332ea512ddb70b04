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
    failed and cancelled jobs, so WatchJob can end replays with the original status.

    ``replica_id`` names the replica that runs the job, holding it until ``lease_until``
    (renewed by its heartbeat); a job whose lease ran out is taken over and failed by
    whichever replica sees it first, and its old holder can no longer change it.
    ``deadline_at`` bounds the job's life (0 = none). ``cancel_requested`` is set by
    ``request_cancel`` from any replica.
    """

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
    replica_id: str = ""
    lease_until: float = 0.0
    deadline_at: float = 0.0
    cancel_requested: bool = False
