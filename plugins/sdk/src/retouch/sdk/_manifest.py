"""The capability manifest a provider publishes: what it can do and what it costs."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray

from ._errors import ProviderRejected
from ._events import Usage

SDK_API_VERSION = 2
"""Bumped when the provider contract changes incompatibly; the server refuses others.

2: ``run(request, context)`` takes a :class:`~retouch.sdk.JobContext`; results may
report :class:`~retouch.sdk.Usage`."""


class Operation(enum.Enum):
    """The edits a provider can perform."""

    INPAINT = "inpaint"
    OUTPAINT = "outpaint"
    ENHANCE = "enhance"


class EnhanceKind(enum.Enum):
    """The enhancements."""

    UPSCALE = "upscale"
    DENOISE = "denoise"
    SHARPEN = "sharpen"


TASKS = ("inpaint", "outpaint", "enhance", "enhance.upscale", "enhance.denoise", "enhance.sharpen")
"""What a request asks for: its operation, or for enhance its kind (``EditRequest.task``)."""


@dataclass(frozen=True, slots=True)
class CostModel:
    """Credits charged for one job.

    The **estimate** is reserved before the job runs: a flat part, a part per started
    megapixel of output, and ``metered_reserve`` to cover metered usage. The **actual**
    price (:meth:`actual_credits`) replaces the estimate when the provider reports
    :class:`~retouch.sdk.Usage`: the same flat and per-megapixel parts (using the
    megapixels the upstream billed, when it says) plus the metered rates times the
    usage, rounded up to whole credits.

    The server charges the actual price but never more than it reserved: the rest of
    the reservation is refunded, and an actual price above the reservation is charged
    at the reservation and logged, so set ``metered_reserve`` to the most a job's
    metered usage may cost.
    """

    credits_per_job: int = 0
    credits_per_megapixel: int = 0
    credits_per_predict_second: float = 0.0
    credits_per_provider_credit: float = 0.0
    credits_per_usd: float = 0.0
    metered_reserve: int = 0
    """Credits reserved on top of the flat and per-megapixel parts for metered usage."""

    def __post_init__(self) -> None:
        prices = (
            self.credits_per_job,
            self.credits_per_megapixel,
            self.credits_per_predict_second,
            self.credits_per_provider_credit,
            self.credits_per_usd,
            self.metered_reserve,
        )
        if any(not math.isfinite(price) or price < 0 for price in prices):
            raise ValueError("credit prices cannot be negative")

    @property
    def metered(self) -> bool:
        """Whether any part of the price depends on reported usage."""
        return bool(
            self.credits_per_predict_second
            or self.credits_per_provider_credit
            or self.credits_per_usd
        )

    def estimate(self, width: int, height: int) -> int:
        """Credits reserved for an output of ``width`` x ``height`` pixels."""
        return self._sized(width * height / 1_000_000) + self.metered_reserve

    def actual_credits(self, usage: Usage, width: int, height: int) -> int:
        """Credits for a job of ``width`` x ``height`` output that used ``usage``.

        Figures the usage leaves out count as zero, except megapixels, which default
        to the output's. Without metered rates this equals the estimate less the
        metered reserve.
        """
        megapixels = width * height / 1_000_000 if usage.megapixels is None else usage.megapixels
        metered = (
            self.credits_per_predict_second * (usage.predict_seconds or 0.0)
            + self.credits_per_provider_credit * (usage.provider_credits or 0.0)
            + self.credits_per_usd * (usage.usd or 0.0)
        )
        # A hair below a whole credit is float noise (0.1 * 30 is 3.0000000000000004).
        return self._sized(megapixels) + math.ceil(round(metered, 9))

    def _sized(self, megapixels: float) -> int:
        return self.credits_per_job + self.credits_per_megapixel * math.ceil(round(megapixels, 9))


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a provider offers. Validated when the plugin is loaded."""

    name: str
    version: str
    description: str
    operations: frozenset[Operation]
    models: tuple[str, ...]
    """Model names; the first is the default."""
    max_pixels: int
    """Largest input (and output) the provider handles, in pixels."""
    supports_mask: bool = False
    supports_outpaint: bool = False
    upscale_factors: tuple[int, ...] = ()
    enhance_kinds: frozenset[EnhanceKind] = frozenset(EnhanceKind)
    """The enhancements offered when ``operations`` holds ENHANCE (upscaling also needs
    ``upscale_factors``). A hosted upscaler that cannot denoise or sharpen offers only
    UPSCALE, so the router sends those jobs elsewhere."""
    cost: CostModel = field(default_factory=CostModel)
    remote: bool = False
    """True when the provider calls a remote API; such providers may cost real money."""
    quality_rank: int = 0
    """Relative quality among providers, higher is better; used by quality routing."""
    requests_per_minute: float | None = None
    """The upstream API's request limit, if it has one; the server keeps under it."""
    capacity: int | None = None
    """Jobs the provider runs at once: a local provider's worker count, a hosted one's
    upstream concurrency limit. The server queues jobs beyond it (``max_concurrency`` in
    the provider's config overrides it); ``None`` leaves it to the server."""
    task_models: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    """Models for a task where they differ from :attr:`models`, keyed by task
    (``"enhance"``, or one kind: ``"enhance.upscale"``); the first is the default. The
    server reports and passes these, so a job says which model really did the work."""
    sdk_api_version: int = SDK_API_VERSION

    def __post_init__(self) -> None:
        problems = []
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            problems.append(f"name {self.name!r} must be non-empty letters, digits, '-' or '_'")
        if not self.operations:
            problems.append("operations must not be empty")
        if not self.models:
            problems.append("models must name at least one model")
        if self.max_pixels <= 0:
            problems.append("max_pixels must be positive")
        if Operation.INPAINT in self.operations and not self.supports_mask:
            problems.append("a provider that inpaints must support masks")
        if Operation.OUTPAINT in self.operations and not self.supports_outpaint:
            problems.append("a provider that outpaints must set supports_outpaint")
        if self.requests_per_minute is not None and self.requests_per_minute <= 0:
            problems.append("requests_per_minute must be positive")
        if self.capacity is not None and self.capacity < 1:
            problems.append("capacity must be at least 1")
        for task, task_models in self.task_models.items():
            if task not in TASKS:
                problems.append(f"task_models key {task!r} must be one of {', '.join(TASKS)}")
            if not task_models or not all(task_models):
                problems.append(f"task_models[{task!r}] must name at least one model")
        if any(factor < 2 for factor in self.upscale_factors):
            problems.append("upscale factors must be 2 or more")
        if Operation.ENHANCE in self.operations and not any(map(self.can_enhance, EnhanceKind)):
            problems.append(
                "a provider that enhances must offer denoise, sharpen, or upscale with factors"
            )
        if self.upscale_factors and EnhanceKind.UPSCALE not in self.enhance_kinds:
            problems.append("upscale factors declared without the UPSCALE enhance kind")
        if problems:
            raise ValueError(f"invalid manifest for provider {self.name!r}: " + "; ".join(problems))

    @property
    def default_model(self) -> str:
        return self.models[0]

    def models_for(self, task: str) -> tuple[str, ...]:
        """The models offered for ``task`` (a request's ``task``): its own entry in
        :attr:`task_models`, else its operation's, else :attr:`models`."""
        operation = task.split(".", 1)[0]
        return self.task_models.get(task) or self.task_models.get(operation) or self.models

    def can(self, operation: Operation) -> bool:
        return operation in self.operations

    def can_enhance(self, kind: EnhanceKind) -> bool:
        """Whether the provider offers the enhancement ``kind`` (upscaling by some factor)."""
        if Operation.ENHANCE not in self.operations or kind not in self.enhance_kinds:
            return False
        return kind is not EnhanceKind.UPSCALE or bool(self.upscale_factors)

    def check_image(self, image: NDArray[Any]) -> None:
        """Raise :class:`ProviderRejected` (field ``image``) unless ``image`` is an RGB
        ``uint8`` array of at most :attr:`max_pixels` pixels."""
        if image.dtype != "uint8" or image.ndim != 3 or image.shape[2] != 3:
            raise ProviderRejected(
                f"expected an RGB uint8 image of shape (height, width, 3), got {image.dtype} "
                f"{image.shape}",
                field="image",
            )
        pixels = image.shape[0] * image.shape[1]
        if pixels > self.max_pixels:
            raise ProviderRejected(
                f"the image has {pixels} pixels; the {self.name} provider takes at most "
                f"{self.max_pixels}: scale it down first",
                field="image",
            )
