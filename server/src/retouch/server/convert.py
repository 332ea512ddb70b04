"""The one edge where protobuf meets the SDK's and the store's plain types."""

from __future__ import annotations

import itertools

from google.protobuf import timestamp_pb2

from retouch.sdk import EnhanceKind, GenerationParams, Health, Manifest, Operation
from retouch.v1 import common_pb2, image_edit_pb2, providers_pb2

from .breaker import BreakerSnapshot, BreakerState
from .jobs.events import Accepted, JobEventData, Progressed
from .jobs.records import JobRecord, JobState, ResultRecord
from .registry import LoadedProvider
from .routing import Route

OPERATIONS: dict[Operation, common_pb2.Operation.ValueType] = {
    Operation.INPAINT: common_pb2.OPERATION_INPAINT,
    Operation.OUTPAINT: common_pb2.OPERATION_OUTPAINT,
    Operation.ENHANCE: common_pb2.OPERATION_ENHANCE,
}
OPERATIONS_FROM_PROTO = {v: k for k, v in OPERATIONS.items()}

FORMATS: dict[str, common_pb2.ImageFormat.ValueType] = {
    "PNG": common_pb2.IMAGE_FORMAT_PNG,
    "JPEG": common_pb2.IMAGE_FORMAT_JPEG,
    "WEBP": common_pb2.IMAGE_FORMAT_WEBP,
}
FORMATS_FROM_PROTO = {v: k for k, v in FORMATS.items()}

ENHANCE_KINDS: dict[int, EnhanceKind] = {
    image_edit_pb2.ENHANCE_KIND_UPSCALE: EnhanceKind.UPSCALE,
    image_edit_pb2.ENHANCE_KIND_DENOISE: EnhanceKind.DENOISE,
    image_edit_pb2.ENHANCE_KIND_SHARPEN: EnhanceKind.SHARPEN,
}

HEALTH: dict[Health, providers_pb2.ProviderHealth.ValueType] = {
    Health.HEALTHY: providers_pb2.PROVIDER_HEALTH_HEALTHY,
    Health.DEGRADED: providers_pb2.PROVIDER_HEALTH_DEGRADED,
    Health.UNAVAILABLE: providers_pb2.PROVIDER_HEALTH_UNAVAILABLE,
}

CIRCUIT_STATES: dict[BreakerState, common_pb2.CircuitState.ValueType] = {
    BreakerState.CLOSED: common_pb2.CIRCUIT_STATE_CLOSED,
    BreakerState.OPEN: common_pb2.CIRCUIT_STATE_OPEN,
    BreakerState.HALF_OPEN: common_pb2.CIRCUIT_STATE_HALF_OPEN,
}

JOB_STATES: dict[JobState, image_edit_pb2.JobState.ValueType] = {
    JobState.QUEUED: image_edit_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: image_edit_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: image_edit_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: image_edit_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: image_edit_pb2.JOB_STATE_CANCELLED,
}
JOB_STATES_FROM_PROTO = {v: k for k, v in JOB_STATES.items()}


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def generation_params(params: common_pb2.GenerationParams) -> GenerationParams:
    return GenerationParams(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        strength=params.strength if params.HasField("strength") else None,
        guidance_scale=params.guidance_scale if params.HasField("guidance_scale") else None,
        steps=params.steps if params.HasField("steps") else None,
    )


def circuit_breaker(provider: str, snapshot: BreakerSnapshot) -> common_pb2.CircuitBreaker:
    message = common_pb2.CircuitBreaker(
        provider=provider,
        state=CIRCUIT_STATES[snapshot.state],
        recent_failures=snapshot.recent_failures,
        probing=snapshot.probing,
    )
    if snapshot.state is BreakerState.OPEN:
        message.reprobe_at.CopyFrom(timestamp(snapshot.reprobe_at))
    return message


def provider_info(
    loaded: LoadedProvider,
    recent_latency_ms: float = 0.0,
    breaker: BreakerSnapshot | None = None,
) -> providers_pb2.ProviderInfo:
    manifest: Manifest = loaded.manifest
    info = providers_pb2.ProviderInfo(
        name=manifest.name,
        version=manifest.version,
        description=manifest.description,
        operations=sorted(OPERATIONS[op] for op in manifest.operations),
        # Task-specific models (opencv's enhance algorithms) after the general ones.
        models=list(
            dict.fromkeys([*manifest.models, *itertools.chain(*manifest.task_models.values())])
        ),
        max_pixels=manifest.max_pixels,
        supports_mask=manifest.supports_mask,
        supports_outpaint=manifest.supports_outpaint,
        upscale_factors=list(manifest.upscale_factors),
        cost=providers_pb2.CostModel(
            credits_per_job=manifest.cost.credits_per_job,
            credits_per_megapixel=manifest.cost.credits_per_megapixel,
        ),
        remote=manifest.remote,
        health=HEALTH[loaded.health.health],
        health_detail=loaded.health.detail,
        quality_rank=manifest.quality_rank,
        recent_latency_ms=round(recent_latency_ms),
    )
    if breaker is not None:
        info.circuit_breaker.CopyFrom(circuit_breaker(manifest.name, breaker))
    return info


def image_info(result: ResultRecord) -> common_pb2.ImageInfo:
    return common_pb2.ImageInfo(
        width=result.width,
        height=result.height,
        format=FORMATS[result.format],
        size_bytes=result.size_bytes,
        content_type=result.content_type,
    )


def job(
    record: JobRecord, result: ResultRecord | None = None, result_url: str = ""
) -> image_edit_pb2.Job:
    message = image_edit_pb2.Job(
        job_id=record.job_id,
        request_id=record.request_id,
        operation=OPERATIONS[Operation(record.operation)],
        state=JOB_STATES[record.state],
        provider=record.provider,
        model=record.model,
        subject=record.subject,
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        result_id=record.result_id,
        error_code=record.error_code,
        error_message=record.error_message,
        last_seq=record.last_seq,
        seed=record.seed,
        cost_credits=record.cost_credits,
        result_url=result_url,
    )
    if result is not None:
        message.result.CopyFrom(image_info(result))
    return message


PREFERENCES: dict[int, str] = {
    common_pb2.ROUTE_PREFERENCE_UNSPECIFIED: "cost",
    common_pb2.ROUTE_PREFERENCE_COST: "cost",
    common_pb2.ROUTE_PREFERENCE_SPEED: "speed",
    common_pb2.ROUTE_PREFERENCE_QUALITY: "quality",
}
PREFERENCES_TO_PROTO: dict[str, common_pb2.RoutePreference.ValueType] = {
    "cost": common_pb2.ROUTE_PREFERENCE_COST,
    "speed": common_pb2.ROUTE_PREFERENCE_SPEED,
    "quality": common_pb2.ROUTE_PREFERENCE_QUALITY,
}


def routing_decision(route: Route) -> common_pb2.RoutingDecision:
    return common_pb2.RoutingDecision(
        chosen=route.candidates[0].name,
        candidates=[c.name for c in route.candidates],
        excluded=[
            common_pb2.ExcludedProvider(provider=name, reason=reason)
            for name, reason in route.excluded
        ],
        prefer=PREFERENCES_TO_PROTO[route.prefer],
        rule=route.rule,
        notes=route.notes,
        breakers=[circuit_breaker(name, snapshot) for name, snapshot in route.breakers.items()],
    )


def _progress(event: Progressed) -> image_edit_pb2.Progress:
    progress = image_edit_pb2.Progress(fraction=event.fraction, stage=event.stage)
    if event.queue is not None:
        progress.queue_position = event.queue.position
        progress.estimated_start.FromNanoseconds(int(event.queue.estimated_start * 1e9))
    return progress


def job_event(job_id: str, seq: int, event: JobEventData) -> image_edit_pb2.JobEvent:
    """The ``JobEvent`` numbered ``seq`` of a job."""
    if isinstance(event, Accepted):
        first = event.route.candidates[0]
        width, height = event.input_size
        return image_edit_pb2.JobEvent(
            job_id=job_id,
            seq=seq,
            accepted=image_edit_pb2.Accepted(
                provider=first.name,
                model=first.model,
                estimated_cost_credits=first.price,
                quota_left=event.quota_left,
                seed=event.seed,
                input_width=width,
                input_height=height,
                routing=routing_decision(event.route),
                credits_left=event.credits_left,
            ),
        )
    if isinstance(event, Progressed):
        return image_edit_pb2.JobEvent(
            job_id=job_id,
            seq=seq,
            progress=_progress(event),
        )
    return image_edit_pb2.JobEvent(
        job_id=job_id,
        seq=seq,
        completed=image_edit_pb2.Completed(
            result_id=event.result.result_id,
            image=image_info(event.result),
            seed=event.seed,
            cost_credits=event.cost_credits,
            provider_ms=event.provider_ms,
        ),
    )
