"""The events of a job's stream, as typed frozen dataclasses instead of protobuf."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, TypeAlias

from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb

Format: TypeAlias = Literal["png", "jpeg", "webp"]
"""An encoded image format."""

Preference: TypeAlias = Literal["cost", "speed", "quality"]
"""What the router optimises for when no provider is named."""

FORMATS: dict[Format, common_pb2.ImageFormat.ValueType] = {
    "png": common_pb2.IMAGE_FORMAT_PNG,
    "jpeg": common_pb2.IMAGE_FORMAT_JPEG,
    "webp": common_pb2.IMAGE_FORMAT_WEBP,
}
PREFERENCES: dict[Preference, common_pb2.RoutePreference.ValueType] = {
    "cost": common_pb2.ROUTE_PREFERENCE_COST,
    "speed": common_pb2.ROUTE_PREFERENCE_SPEED,
    "quality": common_pb2.ROUTE_PREFERENCE_QUALITY,
}
_FORMAT_NAMES = {value: name for name, value in FORMATS.items()}
_PREFERENCE_NAMES = {value: name for name, value in PREFERENCES.items()}


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """Dimensions and encoding of a stored image."""

    width: int
    height: int
    format: str
    """``"png"``, ``"jpeg"`` or ``"webp"``."""
    size_bytes: int
    content_type: str

    @property
    def extension(self) -> str:
        """The usual file extension for the format, with its dot (``".png"``)."""
        return {"jpeg": ".jpg"}.get(self.format, f".{self.format or 'png'}")


class ExcludedProvider(NamedTuple):
    """A provider the router left out, and why."""

    provider: str
    reason: str


@dataclass(frozen=True, slots=True)
class Routing:
    """How the router chose a provider."""

    chosen: str
    candidates: tuple[str, ...]
    """Providers able to take the job, in the order they would be tried."""
    excluded: tuple[ExcludedProvider, ...]
    prefer: str
    """``"cost"``, ``"speed"``, ``"quality"``, or ``""`` when the server's default."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """The first event of a job: it passed validation and policy and has a provider."""

    kind: ClassVar[str] = "accepted"
    job_id: str
    seq: int
    provider: str
    model: str
    estimated_cost_credits: int
    quota_left: int | None
    """Jobs left in the quota period after this one; ``None`` when unlimited."""
    credits_left: int | None
    """Credits left after this job's reservation; ``None`` when the plan uses none."""
    seed: int
    input_width: int
    input_height: int
    routing: Routing


@dataclass(frozen=True, slots=True)
class Progress:
    """The provider made progress; ``fraction`` (0..1) never decreases within a job."""

    kind: ClassVar[str] = "progress"
    job_id: str
    seq: int
    fraction: float
    stage: str
    preview: bytes = b""
    """A small JPEG of the work so far, when the provider sends one."""


@dataclass(frozen=True, slots=True)
class Completed:
    """The last event of a successful job."""

    kind: ClassVar[str] = "completed"
    job_id: str
    seq: int
    result_id: str
    image: ImageInfo
    seed: int
    cost_credits: int
    provider_ms: int
    data: bytes | None = None
    """The encoded result, when the edit asked for it inline and it fitted in one message
    under the server's send limit; None otherwise (download it by ``result_id``)."""


Event: TypeAlias = Accepted | Progress | Completed
"""One event of a job's stream."""


def image_info(message: common_pb2.ImageInfo) -> ImageInfo:
    """An :class:`ImageInfo` from its protobuf."""
    return ImageInfo(
        width=message.width,
        height=message.height,
        format=_FORMAT_NAMES.get(message.format, ""),
        size_bytes=message.size_bytes,
        content_type=message.content_type,
    )


def routing(message: common_pb2.RoutingDecision) -> Routing:
    """A :class:`Routing` from its protobuf."""
    return Routing(
        chosen=message.chosen,
        candidates=tuple(message.candidates),
        excluded=tuple(ExcludedProvider(e.provider, e.reason) for e in message.excluded),
        prefer=_PREFERENCE_NAMES.get(message.prefer, ""),
    )


def unlimited_as_none(value: int) -> int | None:
    """The contract's ``-1`` (unlimited, or not applicable) as ``None``."""
    return None if value < 0 else value


def event(message: pb.JobEvent) -> Event | None:
    """The typed event for a ``JobEvent``; ``None`` for a kind this client does not know
    (a newer server's), which callers skip."""
    which = message.WhichOneof("event")
    if which == "accepted":
        accepted = message.accepted
        return Accepted(
            job_id=message.job_id,
            seq=message.seq,
            provider=accepted.provider,
            model=accepted.model,
            estimated_cost_credits=accepted.estimated_cost_credits,
            quota_left=unlimited_as_none(accepted.quota_left),
            credits_left=unlimited_as_none(accepted.credits_left),
            seed=accepted.seed,
            input_width=accepted.input_width,
            input_height=accepted.input_height,
            routing=routing(accepted.routing),
        )
    if which == "progress":
        progress = message.progress
        return Progress(
            job_id=message.job_id,
            seq=message.seq,
            fraction=progress.fraction,
            stage=progress.stage,
            preview=progress.preview,
        )
    if which == "completed":
        completed = message.completed
        return Completed(
            job_id=message.job_id,
            seq=message.seq,
            result_id=completed.result_id,
            image=image_info(completed.image),
            seed=completed.seed,
            cost_credits=completed.cost_credits,
            provider_ms=completed.provider_ms,
            data=completed.data or None,
        )
    return None
