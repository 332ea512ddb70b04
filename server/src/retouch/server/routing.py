"""Choosing providers for a job: capable ∧ allowed ∧ healthy ∧ breaker closed ∧
affordable, best first — in the order the first matching routing rule asks for, if any.

The first candidate runs the job; the others are fallbacks, tried in order when a
provider fails in a way worth retrying. The decision, with the reason each other
provider was left out, the rule that chose and the breakers' states, goes to the
caller in the Accepted event.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from retouch.sdk import EnhanceKind, Health, Manifest, Operation

from .breaker import Breakers, BreakerSnapshot
from .errors import (
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    QuotaViolation,
    ResourceExhausted,
    Unavailable,
)
from .registry import LoadedProvider, ProviderRegistry
from .routing_rules import JobTraits, RoutingRule, first_match

UNAVAILABLE_RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What the router needs to know about a job."""

    operation: Operation
    width: int
    height: int
    provider: str = ""
    model: str = ""
    upscale: int = 0
    prefer: str = "cost"
    max_cost: int | None = None
    mask_fraction: float | None = None
    """Share of the output to be generated (mask or new margin), 0..1; None for enhance."""
    prompt: bool = False
    """Whether the caller gave a prompt."""
    output_fields: tuple[str, ...] = ()
    """The request fields that make the output larger than the input (an outpaint's
    padding sides). When set, a provider must also take the output's size, and a job
    no provider can take for that size is refused naming these fields."""
    enhance_kind: str = ""
    """For enhance, the kind (``"upscale"``): only providers offering it qualify, and
    providers may name a model per kind."""

    @property
    def task(self) -> str:
        """The key a provider's ``Manifest.models_for`` takes."""
        if self.operation is Operation.ENHANCE and self.enhance_kind:
            return f"enhance.{self.enhance_kind}"
        return self.operation.value


@dataclass(frozen=True, slots=True)
class Candidate:
    """A provider that can take the job, the model it would use, and the price."""

    loaded: LoadedProvider
    model: str
    price: int
    """Credits the caller pays if this provider does the job."""
    own_cost: int = 0
    """The provider's own estimate, which ranks providers even on plans that don't pay."""

    @property
    def name(self) -> str:
        return self.loaded.name


@dataclass(frozen=True, slots=True)
class Route:
    """The router's decision."""

    candidates: list[Candidate]
    excluded: list[tuple[str, str]] = field(default_factory=list)
    prefer: str = "cost"
    rule: str = ""
    """The routing rule that ordered the candidates; empty for the default routing."""
    notes: list[str] = field(default_factory=list)
    """How the rules were applied, for the explanation."""
    breakers: dict[str, BreakerSnapshot] = field(default_factory=dict)
    """The circuit breaker of every provider able to do the job, as routing saw it."""


class LatencyTracker:
    """Median wall time of each provider's recent jobs."""

    WINDOW = 20

    def __init__(self) -> None:
        self._samples: dict[str, deque[float]] = {}

    def record(self, provider: str, milliseconds: float) -> None:
        self._samples.setdefault(provider, deque(maxlen=self.WINDOW)).append(milliseconds)

    def median(self, provider: str) -> float:
        samples = self._samples.get(provider)
        return statistics.median(samples) if samples else 0.0


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """What the caller's plan and environment say about providers and prices."""

    exclusion: Callable[[Manifest], str | None]
    """Why the caller may not use a provider, or None."""
    price: Callable[[int], int]
    """Credits the caller pays, given a provider's own estimate."""
    upstream_wait: Callable[[str], float] = lambda _name: 0.0
    """Seconds until a provider's upstream rate limit lets another call through."""
    plan: str = ""
    """The caller's plan, for routing rules that match on it."""


ALLOW_ALL = RoutePolicy(exclusion=lambda _m: None, price=lambda cost: cost)


class Router:
    """Orders the providers that can do a job."""

    def __init__(
        self,
        registry: ProviderRegistry,
        latency: LatencyTracker | None = None,
        *,
        breakers: Breakers | None = None,
        rules: tuple[RoutingRule, ...] = (),
    ) -> None:
        self._registry = registry
        self.latency = latency or LatencyTracker()
        self.breakers = breakers
        self._rules = rules

    def route(
        self, request: RouteRequest, output_size: tuple[int, int], policy: RoutePolicy = ALLOW_ALL
    ) -> Route:
        """The candidates for ``request``, best first; raise when none can or may take it."""
        if request.provider:
            return self._named(request, output_size, policy)
        excluded: list[tuple[str, str]] = []
        incapable: list[FieldViolation] = []
        forbidden: list[str] = []
        too_dear: list[str] = []
        waits: list[float] = []
        down: list[tuple[str, str, float]] = []
        breakers: dict[str, BreakerSnapshot] = {}
        candidates = []
        for loaded in self._registry.providers.values():
            problem = _incapable(loaded, request, output_size)
            if problem:
                excluded.append((loaded.name, problem.description))
                incapable.append(problem)
                continue
            breaker = self._breaker(loaded.name)
            if breaker is not None:
                breakers[loaded.name] = breaker
            reason = policy.exclusion(loaded.manifest)
            if reason:
                excluded.append((loaded.name, reason))
                forbidden.append(reason)
                continue
            candidate = self._candidate(loaded, request, output_size, policy)
            if request.max_cost is not None and candidate.price > request.max_cost:
                reason = (
                    f"costs {candidate.price} credits, "
                    f"more than max_cost_credits {request.max_cost}"
                )
                excluded.append((loaded.name, reason))
                too_dear.append(f"provider {loaded.name!r} {reason}")
                continue
            outage = _outage(loaded, breaker)
            if outage is not None:
                excluded.append((loaded.name, outage[0]))
                down.append((loaded.name, *outage))
                continue
            wait = policy.upstream_wait(loaded.name)
            if wait > 0:
                excluded.append((loaded.name, f"upstream rate limit; free in {wait:.2f} s"))
                waits.append(wait)
                continue
            candidates.append(candidate)
        if candidates:
            return self._by_rules(request, output_size, policy, candidates, excluded, breakers)
        if waits:
            raise ResourceExhausted(
                "every provider able to do this job is at its upstream rate limit; retry later",
                violations=[QuotaViolation("providers", "upstream request rate")],
                retry_after=min(waits),
            )
        if down:
            raise _all_down(down)
        if too_dear:
            raise InvalidArgument(
                "provider.max_cost_credits",
                "no provider can do this job within max_cost_credits: " + "; ".join(too_dear),
            )
        if forbidden:
            raise PermissionDenied(
                "no provider you may use can do this job: " + "; ".join(forbidden),
                reason="NO_ALLOWED_PROVIDER",
            )
        if not self._registry.providers:
            raise Unavailable(
                "no provider is loaded on this server", retry_after=UNAVAILABLE_RETRY_S
            )
        reasons = "no provider can take this job: " + "; ".join(p.description for p in incapable)
        # Providers that cannot do the operation at all say nothing about the request.
        able = [p for p in incapable if p.field != _OPERATION]
        if request.output_fields and able and all(p.field == _OUTPUT_SIZE for p in able):
            raise InvalidArgument.on(request.output_fields, reasons)
        raise InvalidArgument("provider.model" if request.model else "image", reasons)

    def _named(
        self, request: RouteRequest, output_size: tuple[int, int], policy: RoutePolicy
    ) -> Route:
        loaded = self._registry.get(request.provider)
        if loaded is None:
            known = ", ".join(sorted(self._registry.providers)) or "none"
            raise InvalidArgument(
                "provider.provider",
                f"unknown provider {request.provider!r}; available providers: {known}",
            )
        problem = _incapable(loaded, request, output_size)
        if problem and problem.field == _OUTPUT_SIZE:
            raise InvalidArgument.on(request.output_fields, problem.description)
        if problem:
            raise InvalidArgument(problem.field, problem.description)
        reason = policy.exclusion(loaded.manifest)
        if reason:
            raise PermissionDenied(
                f"provider {loaded.name!r} is not allowed: {reason}",
                reason="PROVIDER_NOT_ALLOWED",
                metadata={"provider": loaded.name},
            )
        candidate = self._candidate(loaded, request, output_size, policy)
        if request.max_cost is not None and candidate.price > request.max_cost:
            raise InvalidArgument(
                "provider.max_cost_credits",
                f"provider {loaded.name!r} costs {candidate.price} credits, more than "
                f"max_cost_credits {request.max_cost}",
            )
        breaker = self._breaker(loaded.name)
        outage = _outage(loaded, breaker)
        if outage is not None:
            raise Unavailable(
                f"provider {loaded.name!r} is {outage[0]}; retry later or let the server choose",
                retry_after=outage[1],
            )
        wait = policy.upstream_wait(loaded.name)
        if wait > 0:
            raise ResourceExhausted(
                f"provider {loaded.name!r} is at its upstream rate limit; retry in {wait:.2f} s",
                violations=[QuotaViolation(f"provider:{loaded.name}", "upstream request rate")],
                retry_after=wait,
            )
        breakers = {loaded.name: breaker} if breaker is not None else {}
        return Route([candidate], [], request.prefer, breakers=breakers)

    def refuse_if_all_down(self, operation: Operation, provider: str = "") -> None:
        """Raise UNAVAILABLE when every provider that can do ``operation`` (or the named
        one) is down or behind an open breaker: checked before the input is even read, so
        such a refusal costs no decode and touches no provider."""
        if provider:
            loaded = self._registry.get(provider)
            capable = [loaded] if loaded is not None and loaded.manifest.can(operation) else []
        else:
            capable = [p for p in self._registry.providers.values() if p.manifest.can(operation)]
        down = []
        for loaded in capable:
            outage = _outage(loaded, self._breaker(loaded.name))
            if outage is None:
                return
            down.append((loaded.name, *outage))
        if down:
            raise _all_down(down)

    def _breaker(self, provider: str) -> BreakerSnapshot | None:
        return self.breakers.snapshot(provider) if self.breakers is not None else None

    def _by_rules(
        self,
        request: RouteRequest,
        output_size: tuple[int, int],
        policy: RoutePolicy,
        candidates: list[Candidate],
        excluded: list[tuple[str, str]],
        breakers: dict[str, BreakerSnapshot],
    ) -> Route:
        """The eligible ``candidates`` ordered by the first matching rule, else by default."""
        default = self._rank(candidates, request.prefer)
        job = JobTraits(
            operation=request.operation,
            pixels=output_size[0] * output_size[1],
            mask_fraction=request.mask_fraction,
            prompt=request.prompt,
            plan=policy.plan,
        )
        rule = first_match(self._rules, job)
        if rule is None:
            return Route(default, excluded, request.prefer, breakers=breakers)
        choice = rule.choose
        chosen = [c for c in candidates if choice.takes(c.name, c.loaded.manifest.remote)]
        if not chosen:
            note = (
                f"rule {rule.name!r} matched but no eligible provider is one of its "
                f"{choice.describe()}; default routing chose"
            )
            return Route(default, excluded, request.prefer, notes=[note], breakers=breakers)
        if choice.providers:
            chosen.sort(key=lambda c: choice.providers.index(c.name))
        else:
            chosen = self._rank(chosen, choice.prefer)
        first = {c.name for c in chosen}
        fallbacks = [c for c in default if c.name not in first]
        note = f"rule {rule.name!r} chose {choice.describe()}"
        if fallbacks:
            note += "; the other eligible providers follow as fallbacks"
        return Route(
            chosen + fallbacks,
            excluded,
            choice.prefer,
            rule=rule.name,
            notes=[note],
            breakers=breakers,
        )

    def _candidate(
        self,
        loaded: LoadedProvider,
        request: RouteRequest,
        output_size: tuple[int, int],
        policy: RoutePolicy,
    ) -> Candidate:
        own = loaded.manifest.cost.estimate(*output_size)
        model = request.model or loaded.manifest.models_for(request.task)[0]
        return Candidate(loaded, model, policy.price(own), own)

    def _rank(self, candidates: list[Candidate], prefer: str) -> list[Candidate]:
        def key(c: Candidate) -> tuple[object, ...]:
            degraded = c.loaded.health.health is Health.DEGRADED
            quality = -c.loaded.manifest.quality_rank
            if prefer == "speed":
                return (degraded, self.latency.median(c.name), c.price, c.own_cost, c.name)
            if prefer == "quality":
                return (degraded, quality, c.price, c.own_cost, c.name)
            return (degraded, c.price, c.own_cost, quality, c.name)

        return sorted(candidates, key=key)


def _outage(loaded: LoadedProvider, breaker: BreakerSnapshot | None) -> tuple[str, float] | None:
    """Why a provider cannot take work now and when to try again, or None."""
    if loaded.health.health is Health.UNAVAILABLE:
        return f"unavailable: {loaded.health.detail or 'down'}", UNAVAILABLE_RETRY_S
    if breaker is not None and not breaker.admits:
        # A half-open breaker whose probe is running answers as soon as the probe ends.
        return breaker.describe(), breaker.reprobe_in_s if breaker.reprobe_in_s > 0 else 1.0
    return None


def _all_down(down: list[tuple[str, str, float]]) -> Unavailable:
    retry = min(wait for _, _, wait in down)
    reasons = "; ".join(f"{name}: {reason}" for name, reason, _ in down)
    return Unavailable(
        f"every provider able to do this job is unavailable ({reasons}); retry in {retry:.2f} s",
        retry_after=retry,
    )


_OPERATION = "provider.provider"
"""The field of a provider's refusal of the operation itself."""
_OUTPUT_SIZE = "<output size>"
"""Stands for ``RouteRequest.output_fields`` in a provider's refusal of the output's size."""


def _incapable(
    loaded: LoadedProvider, route: RouteRequest, output_size: tuple[int, int]
) -> FieldViolation | None:
    manifest = loaded.manifest
    if not manifest.can(route.operation):
        return FieldViolation(
            _OPERATION, f"provider {manifest.name!r} cannot {route.operation.value}"
        )
    if route.width * route.height > manifest.max_pixels:
        return FieldViolation(
            "image",
            f"the image has {route.width * route.height} pixels; provider {manifest.name!r} "
            f"takes at most {manifest.max_pixels}",
        )
    out_w, out_h = output_size
    if route.output_fields and out_w * out_h > manifest.max_pixels:
        return FieldViolation(
            _OUTPUT_SIZE,
            f"the result would be {out_w}x{out_h} = {out_w * out_h} pixels; provider "
            f"{manifest.name!r} takes at most {manifest.max_pixels}",
        )
    models = manifest.models_for(route.task)
    if route.model and route.model not in models:
        return FieldViolation(
            "provider.model",
            f"provider {manifest.name!r} has no model {route.model!r} for {route.task}; "
            f"its models: {', '.join(models)}",
        )
    if route.enhance_kind and not manifest.can_enhance(EnhanceKind(route.enhance_kind)):
        return FieldViolation("kind", f"provider {manifest.name!r} does not {route.enhance_kind}")
    if route.upscale and route.upscale not in manifest.upscale_factors:
        factors = ", ".join(map(str, manifest.upscale_factors)) or "no factor"
        return FieldViolation(
            "scale", f"provider {manifest.name!r} upscales by {factors}, not {route.upscale}"
        )
    return None
