"""The provider's config table, validated by ``start`` before any job runs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PATCH_SIZE = 7
MIN_PATCH_SIZE = 3
MAX_PATCH_SIZE = 15
MAX_WORKERS = 64
DEFAULT_MAX_WORKERS = min(2, os.cpu_count() or 1)
"""PatchMatch jobs are CPU-bound for about a second each; more threads than cores
only make every job slower."""


@dataclass(frozen=True, slots=True)
class PatchMatchConfig:
    """Settings of the PatchMatch provider.

    ``patch_size``: side of the square patches compared and copied, an odd number from
    3 to 15 (default 7); larger follows larger structures, at a higher cost.
    ``max_workers``: threads for pixel work, 1 to 64; jobs beyond that queue.
    """

    patch_size: int = DEFAULT_PATCH_SIZE
    max_workers: int = DEFAULT_MAX_WORKERS

    def __post_init__(self) -> None:
        problems = _problems({"patch_size": self.patch_size, "max_workers": self.max_workers})
        if problems:
            raise ValueError("invalid patchmatch provider config: " + "; ".join(problems))

    @property
    def patch_radius(self) -> int:
        """Pixels from a patch's centre to its edge."""
        return self.patch_size // 2

    @classmethod
    def from_mapping(cls, config: Mapping[str, object]) -> PatchMatchConfig:
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
            raise ValueError("invalid patchmatch provider config: " + "; ".join(problems))
        return cls(
            patch_size=_int(config, "patch_size", DEFAULT_PATCH_SIZE),
            max_workers=_int(config, "max_workers", DEFAULT_MAX_WORKERS),
        )


_BOUNDS = {"patch_size": (MIN_PATCH_SIZE, MAX_PATCH_SIZE), "max_workers": (1, MAX_WORKERS)}


def _problems(config: Mapping[str, object]) -> list[str]:
    problems = []
    for key, (low, high) in _BOUNDS.items():
        if key not in config:
            continue
        value = config[key]
        # bool is an int subclass, but "patch_size = true" is a mistake, not 1.
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append(f"{key!r} must be an integer from {low} to {high}, got {value!r}")
        elif key == "patch_size" and value % 2 == 0:
            problems.append(f"'patch_size' must be odd, so patches have a centre; got {value}")
    return problems


def _int(config: Mapping[str, object], key: str, default: int) -> int:
    value = config.get(key, default)
    assert isinstance(value, int)  # checked by _problems
    return value
