"""How job, result and upload records map to table rows, the same in every dialect."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from .records import JobRecord, JobState, ResultRecord, UploadRecord

JOB_FIELDS = tuple(f.name for f in dataclasses.fields(JobRecord))
JOB_COLUMNS = ", ".join(JOB_FIELDS)
RESULT_COLUMNS = ", ".join(f.name for f in dataclasses.fields(ResultRecord))
UPLOAD_COLUMNS = ", ".join(f.name for f in dataclasses.fields(UploadRecord))

MUTABLE_FIELDS = tuple(
    name
    for name in JOB_FIELDS
    if name
    not in (
        "job_id",
        "owner",
        "subject",
        "request_id",
        "fingerprint",
        "operation",
        "created_at",
        "cancel_requested",
    )
)
"""What ``update_job`` and ``finish`` write: not the job's identity, nor a cancel request."""

UNFINISHED = "state IN ('queued', 'running')"
"""SQL condition for a job that has not reached a terminal state."""
HAS_REQUEST_ID = "request_id <> ''"
"""The predicate of the partial unique index on (owner, request_id). A lookup repeats it:
with only ``request_id = ?`` the planner cannot prove the bound value is non-empty, so
it ignores the index and scans every job of the owner's."""

_STATE = JOB_FIELDS.index("state")
_SEED = JOB_FIELDS.index("seed")
_FINAL_STATUS = JOB_FIELDS.index("final_status")
_CANCEL_REQUESTED = JOB_FIELDS.index("cancel_requested")

_INT64_LIMIT = 2**63
_UINT64_SPAN = 2**64


def seed_column(seed: int) -> int:
    """A uint64 seed as the signed 64-bit integer both dialects store: the same 64 bits,
    so seeds of 2^63 and above come back unchanged through :func:`seed_of_column`. Seeds
    below 2^63, every one stored before, keep their value."""
    return seed - _UINT64_SPAN if seed >= _INT64_LIMIT else seed


def seed_of_column(stored: int) -> int:
    """The uint64 seed of a stored signed value (the inverse of :func:`seed_column`)."""
    return stored + _UINT64_SPAN if stored < 0 else stored


def job_values(job: JobRecord) -> tuple[object, ...]:
    """The row of ``job``, in :data:`JOB_COLUMNS` order."""
    values = [getattr(job, name) for name in JOB_FIELDS]
    values[_STATE] = job.state.value
    values[_SEED] = seed_column(job.seed)
    return tuple(values)


def mutable_values(job: JobRecord) -> list[object]:
    """The values of :data:`MUTABLE_FIELDS` in ``job``."""
    return [_mutable_value(job, name) for name in MUTABLE_FIELDS]


def _mutable_value(job: JobRecord, name: str) -> object:
    if name == "state":
        return job.state.value
    if name == "seed":
        return seed_column(job.seed)
    return getattr(job, name)


def job_from_row(row: Iterable[Any]) -> JobRecord:
    """The record of a row selected as :data:`JOB_COLUMNS`."""
    values = list(row)
    values[_STATE] = JobState(values[_STATE])
    values[_SEED] = seed_of_column(values[_SEED])
    values[_FINAL_STATUS] = bytes(values[_FINAL_STATUS])
    values[_CANCEL_REQUESTED] = bool(values[_CANCEL_REQUESTED])
    return JobRecord(*values)


def result_values(result: ResultRecord) -> tuple[object, ...]:
    return dataclasses.astuple(result)


def upload_values(upload: UploadRecord) -> tuple[object, ...]:
    return dataclasses.astuple(upload)
