"""Plans: what a subject may do, how often, and at what price."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("PNG", "JPEG", "WEBP")


class PlanError(ValueError):
    """A plan in the configuration is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Limits and prices for the subjects on it.

    A job costs the provider's own price plus the plan's surcharge, in credits, and
    only on plans with ``credits = true``; other plans are limited by quota and rate.
    """

    name: str
    rate_per_s: float = 10.0
    """Sustained requests per second per subject (token bucket refill)."""
    burst: int = 20
    """Requests a subject may make at once (token bucket capacity)."""
    monthly_jobs: int | None = None
    """Jobs per calendar month (UTC); ``None`` is unlimited."""
    credits: bool = False
    """Whether jobs are paid from the subject's credit balance."""
    credits_per_job: int = 0
    credits_per_megapixel: int = 0
    max_pixels: int = 16_777_216
    max_steps: int = 50
    max_strength: float = 1.0
    allowed_providers: tuple[str, ...] | None = None
    """Providers this plan may use; ``None`` allows every provider."""
    paid_providers: bool = False
    """Whether paid remote providers are allowed (never in local/test environments)."""
    output_formats: tuple[str, ...] = FORMATS
    retention_days: int = 30
    queue_weight: float = 1.0
    """This plan's tenants' share of a busy provider, against other plans' (2 starts
    twice as many of their waiting jobs per turn as 1)."""

    def __post_init__(self) -> None:
        problems = []
        if self.queue_weight <= 0:
            problems.append("queue_weight must be positive")
        if self.rate_per_s <= 0 or self.burst < 1:
            problems.append("rate_per_s must be positive and burst at least 1")
        if self.monthly_jobs is not None and self.monthly_jobs < 0:
            problems.append("monthly_jobs cannot be negative")
        if self.credits_per_job < 0 or self.credits_per_megapixel < 0:
            problems.append("credit prices cannot be negative")
        if self.max_pixels <= 0 or self.max_steps <= 0 or not 0 < self.max_strength <= 1:
            problems.append("max_pixels and max_steps must be positive, max_strength in (0, 1]")
        unknown = set(self.output_formats) - set(FORMATS)
        if unknown or not self.output_formats:
            problems.append(f"output_formats must be some of {', '.join(FORMATS)}")
        if self.retention_days <= 0:
            problems.append("retention_days must be positive")
        if problems:
            raise PlanError(f"plan {self.name!r}: " + "; ".join(problems))

    def surcharge(self, width: int, height: int) -> int:
        """The plan's own credits for an output of ``width`` x ``height``."""
        if not self.credits:
            return 0
        return self.credits_per_job + self.credits_per_megapixel * math.ceil(
            width * height / 1_000_000
        )

    @classmethod
    def from_table(cls, name: str, table: dict[str, Any]) -> Plan:
        """A plan from its ``[plans.<name>]`` config table."""
        known = set(cls.__dataclass_fields__) - {"name"}
        unknown = set(table) - known
        if unknown:
            raise PlanError(f"plan {name!r}: unknown settings {', '.join(sorted(unknown))}")
        values = dict(table)
        for key in ("allowed_providers", "output_formats"):
            if key in values and values[key] is not None:
                values[key] = tuple(str(v) for v in values[key])
        try:
            return cls(name=name, **values)
        except TypeError as exc:
            raise PlanError(f"plan {name!r}: {exc}") from exc


DEFAULT_PLAN = Plan(name="standard", rate_per_s=20.0, burst=40)
"""The plan of every subject when the configuration names none: generous, unmetered."""


@dataclass(frozen=True, slots=True)
class PlanBook:
    """The configured plans, by name."""

    plans: dict[str, Plan] = field(default_factory=lambda: {DEFAULT_PLAN.name: DEFAULT_PLAN})

    def get(self, name: str) -> Plan | None:
        return self.plans.get(name)
