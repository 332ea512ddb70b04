"""What a provider yields while it works: progress, then exactly one result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
class Result:
    """The finished image, in RGB, of the size the request implies."""

    image: RGBImage
    metadata: Mapping[str, str] = field(default_factory=dict)


Event = Progress | Result
