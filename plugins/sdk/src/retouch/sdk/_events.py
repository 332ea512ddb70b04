"""What a provider yields while it works: progress, then exactly one result."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._requests import RGBImage


@dataclass(frozen=True, slots=True)
class Progress:
    """Work done so far. ``fraction`` is in 0..1 and never decreases within a job."""

    fraction: float
    stage: str
    preview: RGBImage | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"progress fraction {self.fraction} is outside 0..1")


@dataclass(frozen=True, slots=True)
class Usage:
    """What a job actually used, in the provider's own figures; ``None`` = not reported.

    The manifest's :class:`~retouch.sdk.CostModel` turns it into credits
    (:meth:`~retouch.sdk.CostModel.actual_credits`), which the server charges instead
    of the estimate it reserved.
    """

    predict_seconds: float | None = None
    """Compute time the upstream billed (e.g. a prediction's ``predict_time``)."""
    images: int | None = None
    """Images generated (several calls, e.g. one per outpainted side, count each)."""
    megapixels: float | None = None
    """Output megapixels the upstream billed."""
    provider_credits: float | None = None
    """The upstream's own credits or units (e.g. Stability credits, Workers AI neurons)."""
    usd: float | None = None
    """Cost in US dollars, when the upstream reports money."""

    def __post_init__(self) -> None:
        for name in ("predict_seconds", "images", "megapixels", "provider_credits", "usd"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"usage {name} must be a finite, non-negative number")

    def __add__(self, other: Usage) -> Usage:
        """The usage of two calls together (missing figures stay missing on both sides)."""

        def add(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else a + b

        images = add(self.images, other.images)
        return Usage(
            predict_seconds=add(self.predict_seconds, other.predict_seconds),
            images=None if images is None else int(images),
            megapixels=add(self.megapixels, other.megapixels),
            provider_credits=add(self.provider_credits, other.provider_credits),
            usd=add(self.usd, other.usd),
        )


@dataclass(frozen=True, slots=True)
class Result:
    """The finished image, in RGB, of the size the request implies.

    ``usage`` reports what the job actually used upstream, when the provider knows;
    the server then charges the cost model's actual price rather than the estimate.
    """

    image: RGBImage
    metadata: Mapping[str, str] = field(default_factory=dict)
    usage: Usage | None = None


Event = Progress | Result
