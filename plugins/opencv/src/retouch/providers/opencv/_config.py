"""The provider's config table, validated by ``start`` before any job runs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_INPAINT_RADIUS = 3
MAX_INPAINT_RADIUS = 50
MAX_WORKERS = 64
DEFAULT_MAX_WORKERS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class OpenCVConfig:
    """Settings of the OpenCV provider.

    ``inpaint_radius``: neighbourhood (pixels) cv2.inpaint draws on, 1 to 50.
    ``max_workers``: threads for pixel work, 1 to 64; jobs beyond that queue.
    """

    inpaint_radius: int = DEFAULT_INPAINT_RADIUS
    max_workers: int = DEFAULT_MAX_WORKERS

    def __post_init__(self) -> None:
        problems = _problems(
            {"inpaint_radius": self.inpaint_radius, "max_workers": self.max_workers}
        )
        if problems:
            raise ValueError("invalid opencv provider config: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, config: Mapping[str, object]) -> OpenCVConfig:
        """Build from the server's config table; raise ValueError naming every bad key."""
        problems = _problems(config)
        unknown = sorted(set(config) - _BOUNDS.keys())
        if unknown:
            problems.insert(
                0,
                f"unknown key(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(_BOUNDS))})",
            )
        if problems:
            raise ValueError("invalid opencv provider config: " + "; ".join(problems))
        return cls(
            inpaint_radius=_int(config, "inpaint_radius", DEFAULT_INPAINT_RADIUS),
            max_workers=_int(config, "max_workers", DEFAULT_MAX_WORKERS),
        )


_BOUNDS = {"inpaint_radius": (1, MAX_INPAINT_RADIUS), "max_workers": (1, MAX_WORKERS)}


def _problems(config: Mapping[str, object]) -> list[str]:
    problems = []
    for key, (low, high) in _BOUNDS.items():
        if key not in config:
            continue
        value = config[key]
        # bool is an int subclass, but "inpaint_radius = true" is a mistake, not 1.
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append(f"{key!r} must be an integer from {low} to {high}, got {value!r}")
    return problems


def _int(config: Mapping[str, object], key: str, default: int) -> int:
    value = config.get(key, default)
    assert isinstance(value, int)  # checked by _problems
    return value
