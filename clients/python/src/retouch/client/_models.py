"""What the service returns besides events — jobs, uploads, usage, quotes, providers —
as typed frozen dataclasses, and their conversions from protobuf."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from google.protobuf import timestamp_pb2

from retouch.v1 import account_pb2, common_pb2, providers_pb2
from retouch.v1 import image_edit_pb2 as pb

from ._events import ImageInfo, Routing, image_info, routing, unlimited_as_none


class Operation(StrEnum):
    """What a job does."""

    INPAINT = "inpaint"
    OUTPAINT = "outpaint"
    ENHANCE = "enhance"


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ProviderHealth(StrEnum):
    """Whether a provider takes work."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"


OPERATIONS: dict[Operation, common_pb2.Operation.ValueType] = {
    Operation.INPAINT: common_pb2.OPERATION_INPAINT,
    Operation.OUTPAINT: common_pb2.OPERATION_OUTPAINT,
    Operation.ENHANCE: common_pb2.OPERATION_ENHANCE,
}
JOB_STATES: dict[JobState, pb.JobState.ValueType] = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
_OPERATION_NAMES = {value: name for name, value in OPERATIONS.items()}
_STATE_NAMES = {value: name for name, value in JOB_STATES.items()}
_HEALTH_NAMES = {
    providers_pb2.PROVIDER_HEALTH_HEALTHY: ProviderHealth.HEALTHY,
    providers_pb2.PROVIDER_HEALTH_DEGRADED: ProviderHealth.DEGRADED,
    providers_pb2.PROVIDER_HEALTH_UNAVAILABLE: ProviderHealth.UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as the server stores it (``GetJob``, ``ListJobs``, ``CancelJob``)."""

    job_id: str
    request_id: str
    operation: Operation | None
    state: JobState | None
    provider: str
    model: str
    subject: str
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    result_id: str
    result: ImageInfo | None
    error_code: str
    """The gRPC status code name of a failed or cancelled job, e.g. ``"UNAVAILABLE"``."""
    error_message: str
    last_seq: int
    seed: int
    cost_credits: int


@dataclass(frozen=True, slots=True)
class Upload:
    """A stored upload; pass it (or its ``upload_id``) as an edit's input."""

    upload_id: str
    size_bytes: int
    sha256: str
    expires_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Bucket:
    """A rate limit's token bucket."""

    name: str
    """What it limits: ``"subject"``, ``"tenant"`` or ``"provider:<name>"``."""
    capacity: float
    tokens: float
    refill_per_second: float


@dataclass(frozen=True, slots=True)
class Usage:
    """Where a subject stands: plan, quota, credits and rate limits."""

    subject: str
    plan: str
    quota_limit: int | None
    """Jobs per quota period; ``None`` when unlimited."""
    quota_used: int
    quota_left: int | None
    """Jobs left this period; ``None`` when unlimited."""
    quota_resets_at: dt.datetime | None
    credits_balance: int
    credits_reserved: int
    buckets: tuple[Bucket, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a quoted edit would be refused."""

    code: str
    """The status code name the edit would fail with, e.g. ``"RESOURCE_EXHAUSTED"``."""
    reason: str
    message: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class Quote:
    """A dry run of an edit: nothing is charged, reserved or run."""

    allowed: bool
    provider: str
    model: str
    estimated_cost_credits: int
    routing: Routing
    refusal: Refusal | None


@dataclass(frozen=True, slots=True)
class CostModel:
    """How a provider charges, in credits."""

    credits_per_job: int
    credits_per_megapixel: int


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """One provider's capability manifest, cost and health."""

    name: str
    version: str
    description: str
    operations: tuple[Operation, ...]
    models: tuple[str, ...]
    """The first is the default."""
    max_pixels: int
    supports_mask: bool
    supports_outpaint: bool
    upscale_factors: tuple[int, ...]
    cost: CostModel
    remote: bool
    health: ProviderHealth
    health_detail: str
    quality_rank: int
    recent_latency_ms: int


def timestamp(message: timestamp_pb2.Timestamp) -> dt.datetime | None:
    """An aware UTC datetime, or ``None`` for the unset timestamp."""
    if message.seconds == 0 and message.nanos == 0:
        return None
    return message.ToDatetime(tzinfo=dt.UTC)


def job_info(message: pb.Job) -> JobInfo:
    """A :class:`JobInfo` from its protobuf."""
    return JobInfo(
        job_id=message.job_id,
        request_id=message.request_id,
        operation=_OPERATION_NAMES.get(message.operation),
        state=_STATE_NAMES.get(message.state),
        provider=message.provider,
        model=message.model,
        subject=message.subject,
        created_at=timestamp(message.created_at),
        updated_at=timestamp(message.updated_at),
        result_id=message.result_id,
        result=image_info(message.result) if message.HasField("result") else None,
        error_code=message.error_code,
        error_message=message.error_message,
        last_seq=message.last_seq,
        seed=message.seed,
        cost_credits=message.cost_credits,
    )


def upload(message: pb.Upload) -> Upload:
    """An :class:`Upload` from its protobuf."""
    return Upload(
        upload_id=message.upload_id,
        size_bytes=message.size_bytes,
        sha256=message.sha256,
        expires_at=timestamp(message.expires_at),
    )


def usage(message: account_pb2.Usage) -> Usage:
    """A :class:`Usage` from its protobuf."""
    return Usage(
        subject=message.subject,
        plan=message.plan,
        quota_limit=unlimited_as_none(message.quota_limit),
        quota_used=message.quota_used,
        quota_left=unlimited_as_none(message.quota_left),
        quota_resets_at=timestamp(message.quota_resets_at),
        credits_balance=message.credits_balance,
        credits_reserved=message.credits_reserved,
        buckets=tuple(
            Bucket(b.name, b.capacity, b.tokens, b.refill_per_second) for b in message.buckets
        ),
    )


def quote(message: account_pb2.QuoteResponse) -> Quote:
    """A :class:`Quote` from its protobuf."""
    refused = message.refusal if message.HasField("refusal") else None
    return Quote(
        allowed=message.allowed,
        provider=message.provider,
        model=message.model,
        estimated_cost_credits=message.estimated_cost_credits,
        routing=routing(message.routing),
        refusal=Refusal(
            code=refused.code,
            reason=refused.reason,
            message=refused.message,
            retry_after=refused.retry_after_seconds or None,
        )
        if refused is not None
        else None,
    )


def provider_info(message: providers_pb2.ProviderInfo) -> ProviderInfo:
    """A :class:`ProviderInfo` from its protobuf."""
    return ProviderInfo(
        name=message.name,
        version=message.version,
        description=message.description,
        operations=tuple(_OPERATION_NAMES[o] for o in message.operations if o in _OPERATION_NAMES),
        models=tuple(message.models),
        max_pixels=message.max_pixels,
        supports_mask=message.supports_mask,
        supports_outpaint=message.supports_outpaint,
        upscale_factors=tuple(message.upscale_factors),
        cost=CostModel(message.cost.credits_per_job, message.cost.credits_per_megapixel),
        remote=message.remote,
        health=_HEALTH_NAMES.get(message.health, ProviderHealth.UNKNOWN),
        health_detail=message.health_detail,
        quality_rank=message.quality_rank,
        recent_latency_ms=message.recent_latency_ms,
    )
