"""Choosing providers for a job: capable ∧ allowed ∧ healthy ∧ affordable, best first.

The first candidate runs the job; the others are fallbacks, tried in order when a
provider fails in a way worth retrying. The decision, with the reason each other
provider was left out, goes to the caller in the Accepted event.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from retouch.sdk import Health, Manifest, Operation

from .errors import (
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    QuotaViolation,
    ResourceExhausted,
    Unavailable,
)
from .registry import LoadedProvider, ProviderRegistry

UNAVAILABLE_RETRY_S = 5.0
PREFERENCES = ("cost", "speed", "quality")


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
    enhance_kind: str = ""
    """For enhance, the kind (``"upscale"``): providers may name a model per kind."""

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


ALLOW_ALL = RoutePolicy(exclusion=lambda _m: None, price=lambda cost: cost)


class Router:
    """Orders the providers that can do a job."""

    def __init__(self, registry: ProviderRegistry, latency: LatencyTracker | None = None) -> None:
        self._registry = registry
        self.latency = latency or LatencyTracker()

    def route(
        self, request: RouteRequest, output_size: tuple[int, int], policy: RoutePolicy = ALLOW_ALL
    ) -> Route:
        """The candidates for ``request``, best first; raise when none can or may take it."""
        if request.provider:
            return self._named(request, output_size, policy)
        excluded: list[tuple[str, str]] = []
        incapable: list[str] = []
        forbidden: list[str] = []
        too_dear: list[str] = []
        waits: list[float] = []
        down: list[str] = []
        candidates = []
        for loaded in self._registry.providers.values():
            problem = _incapable(loaded, request)
            if problem:
                excluded.append((loaded.name, problem.description))
                incapable.append(problem.description)
                continue
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
                too_dear.append(reason)
                continue
            if loaded.health.health is Health.UNAVAILABLE:
                excluded.append((loaded.name, f"unavailable: {loaded.health.detail or 'down'}"))
                down.append(loaded.name)
                continue
            wait = policy.upstream_wait(loaded.name)
            if wait > 0:
                excluded.append((loaded.name, f"upstream rate limit; free in {wait:.2f} s"))
                waits.append(wait)
                continue
            candidates.append(candidate)
        if candidates:
            return Route(self._rank(candidates, request.prefer), excluded, request.prefer)
        if waits:
            raise ResourceExhausted(
                "every provider able to do this job is at its upstream rate limit; retry later",
                violations=[QuotaViolation("providers", "upstream request rate")],
                retry_after=min(waits),
            )
        if down:
            raise Unavailable(
                f"every provider able to do this job is unavailable ({', '.join(down)}); "
                "retry later",
                retry_after=UNAVAILABLE_RETRY_S,
            )
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
        raise InvalidArgument(
            "provider.model" if request.model else "image",
            "no provider can take this job: " + "; ".join(incapable),
        )

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
        problem = _incapable(loaded, request)
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
        if loaded.health.health is Health.UNAVAILABLE:
            raise Unavailable(
                f"provider {loaded.name!r} is unavailable; retry later or let the server choose",
                retry_after=UNAVAILABLE_RETRY_S,
            )
        wait = policy.upstream_wait(loaded.name)
        if wait > 0:
            raise ResourceExhausted(
                f"provider {loaded.name!r} is at its upstream rate limit; retry in {wait:.2f} s",
                violations=[QuotaViolation(f"provider:{loaded.name}", "upstream request rate")],
                retry_after=wait,
            )
        return Route([candidate], [], request.prefer)

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


def _incapable(loaded: LoadedProvider, route: RouteRequest) -> FieldViolation | None:
    manifest = loaded.manifest
    if not manifest.can(route.operation):
        return FieldViolation(
            "provider.provider", f"provider {manifest.name!r} cannot {route.operation.value}"
        )
    if route.width * route.height > manifest.max_pixels:
        return FieldViolation(
            "image",
            f"the image has {route.width * route.height} pixels; provider {manifest.name!r} "
            f"takes at most {manifest.max_pixels}",
        )
    models = manifest.models_for(route.task)
    if route.model and route.model not in models:
        return FieldViolation(
            "provider.model",
            f"provider {manifest.name!r} has no model {route.model!r} for {route.task}; "
            f"its models: {', '.join(models)}",
        )
    if route.upscale and route.upscale not in manifest.upscale_factors:
        factors = ", ".join(map(str, manifest.upscale_factors)) or "no factor"
        return FieldViolation(
            "scale", f"provider {manifest.name!r} upscales by {factors}, not {route.upscale}"
        )
    return None
