"""Routing rules by task complexity: the first rule whose conditions match a job picks
which eligible providers try it first.

Configured as an ordered array of tables::

    [[routing_rules]]
    name = "small-removals-stay-local"
    when = { mask_fraction_max = 0.3, prompt = false }
    choose = { kind = "local", prefer = "cost" }

    [[routing_rules]]
    name = "everything-else-hosted"
    choose = { kind = "hosted", prefer = "quality" }

Conditions (all optional; a rule without ``when`` matches every job): ``operations``
(``inpaint``/``outpaint``/``enhance``), ``mask_fraction_min`` ≤ fraction <
``mask_fraction_max`` (the share of the output to be generated: the mask for inpaint,
the new margin for outpaint; a rule with a mask condition never matches enhance),
``pixels_min`` ≤ output pixels < ``pixels_max``, ``prompt`` (whether a prompt was
given), ``plans`` (plan names).

A choice narrows the eligible providers — those the router would consider anyway:
capable, allowed by the plan and environment, healthy, breaker closed, within
``max_cost_credits`` — by ``kind`` (``local``, ``hosted`` or ``any``) and optionally
to a ``providers`` list (tried in the list's order), then ranks them by ``prefer``
(``cost``, ``quality`` or ``speed``). The rule's providers are tried first and every
other eligible provider stays behind them as a fallback. When the first matching rule
has no eligible provider, the job gets the default routing, and the routing
explanation says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from retouch.sdk import Operation

PREFERENCES = ("cost", "speed", "quality")
KINDS = ("any", "local", "hosted")


class RuleError(ValueError):
    """A routing rule in the configuration is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class JobTraits:
    """What the rules look at in a job."""

    operation: Operation
    pixels: int
    """Pixels of the output."""
    mask_fraction: float | None
    """Share of the output to be generated, 0..1; None when the edit has no mask."""
    prompt: bool
    plan: str
    """The caller's plan name; empty when the server runs without plans."""


@dataclass(frozen=True, slots=True)
class RuleConditions:
    """When a rule applies; None means "any"."""

    operations: frozenset[Operation] | None = None
    mask_fraction_min: float | None = None
    mask_fraction_max: float | None = None
    pixels_min: int | None = None
    pixels_max: int | None = None
    prompt: bool | None = None
    plans: frozenset[str] | None = None

    def matches(self, job: JobTraits) -> bool:
        if self.operations is not None and job.operation not in self.operations:
            return False
        if self.mask_fraction_min is not None or self.mask_fraction_max is not None:
            if job.mask_fraction is None:
                return False
            if not _within(job.mask_fraction, self.mask_fraction_min, self.mask_fraction_max):
                return False
        if not _within(job.pixels, self.pixels_min, self.pixels_max):
            return False
        if self.prompt is not None and job.prompt != self.prompt:
            return False
        return self.plans is None or job.plan in self.plans


@dataclass(frozen=True, slots=True)
class RuleChoice:
    """Which eligible providers a rule puts first, and in what order."""

    kind: str = "any"
    prefer: str = "cost"
    providers: tuple[str, ...] = ()
    """When given, only these providers, in this order."""

    def takes(self, provider: str, remote: bool) -> bool:
        if self.providers and provider not in self.providers:
            return False
        return self.kind == "any" or (self.kind == "hosted") == remote

    def describe(self) -> str:
        what = {"any": "providers", "local": "local providers", "hosted": "hosted providers"}
        listed = f" among {', '.join(self.providers)}" if self.providers else ""
        return f"{what[self.kind]}{listed} by {self.prefer}"


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """One named rule: conditions and a choice."""

    name: str
    when: RuleConditions
    choose: RuleChoice

    @classmethod
    def from_table(cls, index: int, table: Mapping[str, Any]) -> RoutingRule:
        """A rule from one ``[[routing_rules]]`` table (``index`` counts from 0)."""
        name = table.get("name")
        where = f"routing_rules[{index}]" + (f" ({name!r})" if name else "")
        if not isinstance(name, str) or not name:
            raise RuleError(f"{where}: name is required")
        _only(where, table, {"name", "when", "choose"})
        when = _table(where, table, "when")
        choose = _table(where, table, "choose")
        if "choose" not in table:
            raise RuleError(f"{where}: choose is required (kind, prefer, providers)")
        return cls(name, _conditions(f"{where}.when", when), _choice(f"{where}.choose", choose))


def parse_rules(tables: object) -> tuple[RoutingRule, ...]:
    """The rules of a ``[[routing_rules]]`` array, in order; names must be unique."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise RuleError("routing_rules must be an array of tables ([[routing_rules]])")
    rules = tuple(RoutingRule.from_table(i, t) for i, t in enumerate(tables))
    names = [rule.name for rule in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuleError(f"routing_rules: names must be unique ({', '.join(duplicates)})")
    return rules


def first_match(rules: Sequence[RoutingRule], job: JobTraits) -> RoutingRule | None:
    return next((rule for rule in rules if rule.when.matches(job)), None)


def _within(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value < high)


def _only(where: str, table: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(table) - known
    if unknown:
        raise RuleError(f"{where}: unknown settings {', '.join(sorted(unknown))}")


def _table(where: str, table: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise RuleError(f"{where}: {key} must be a table")
    return value


def _conditions(where: str, table: Mapping[str, Any]) -> RuleConditions:
    _only(
        where,
        table,
        {
            "operations",
            "mask_fraction_min",
            "mask_fraction_max",
            "pixels_min",
            "pixels_max",
            "prompt",
            "plans",
        },
    )
    values: dict[str, Any] = {}
    if "operations" in table:
        known = {op.value: op for op in Operation}
        names = _strings(where, "operations", table["operations"])
        wrong = [n for n in names if n not in known]
        if wrong:
            raise RuleError(
                f"{where}: unknown operations {', '.join(wrong)}; use {', '.join(known)}"
            )
        values["operations"] = frozenset(known[n] for n in names)
    for key in ("mask_fraction_min", "mask_fraction_max"):
        if key in table:
            fraction = _number(where, key, table[key])
            if not 0.0 <= fraction <= 1.0:
                raise RuleError(f"{where}: {key} must be 0..1")
            values[key] = fraction
    for key in ("pixels_min", "pixels_max"):
        if key in table:
            pixels = _number(where, key, table[key])
            if pixels < 0 or pixels != int(pixels):
                raise RuleError(f"{where}: {key} must be a whole number of pixels")
            values[key] = int(pixels)
    if "prompt" in table:
        if not isinstance(table["prompt"], bool):
            raise RuleError(f"{where}: prompt must be true or false")
        values["prompt"] = table["prompt"]
    if "plans" in table:
        values["plans"] = frozenset(_strings(where, "plans", table["plans"]))
    return RuleConditions(**values)


def _choice(where: str, table: Mapping[str, Any]) -> RuleChoice:
    _only(where, table, {"kind", "prefer", "providers"})
    kind = table.get("kind", "any")
    if kind not in KINDS:
        raise RuleError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    prefer = table.get("prefer", "cost")
    if prefer not in PREFERENCES:
        raise RuleError(f"{where}: prefer must be one of {', '.join(PREFERENCES)}, not {prefer!r}")
    providers = tuple(_strings(where, "providers", table.get("providers", [])))
    return RuleChoice(kind=kind, prefer=prefer, providers=providers)


def _strings(where: str, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{where}: {key} must be a list of names")
    return list(value)


def _number(where: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(f"{where}: {key} must be a number, not {value!r}")
    return float(value)


__all__ = [
    "JobTraits",
    "RoutingRule",
    "RuleChoice",
    "RuleConditions",
    "RuleError",
    "first_match",
    "parse_rules",
]
