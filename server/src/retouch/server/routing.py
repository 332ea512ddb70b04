"""Choosing the providers for a job: capable, healthy, cheapest first."""

from __future__ import annotations

from dataclasses import dataclass

from retouch.sdk import Health, Operation

from .errors import FieldViolation, InvalidArgument, Unavailable
from .registry import LoadedProvider, ProviderRegistry

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


@dataclass(frozen=True, slots=True)
class Candidate:
    """A provider that can take the job, and the model it would use."""

    loaded: LoadedProvider
    model: str
    estimated_cost: int


class Router:
    """Orders the providers that can do a job; the first is tried first."""

    def __init__(self, registry: ProviderRegistry) -> None:
        self._registry = registry

    def candidates(self, route: RouteRequest, output_size: tuple[int, int]) -> list[Candidate]:
        """Providers for ``route``, best first; raise when none can or may take it."""
        if route.provider:
            loaded = self._registry.get(route.provider)
            if loaded is None:
                known = ", ".join(sorted(self._registry.providers)) or "none"
                raise InvalidArgument(
                    "provider.provider",
                    f"unknown provider {route.provider!r}; available providers: {known}",
                )
            problem = _incapable(loaded, route)
            if problem:
                raise InvalidArgument(problem.field, problem.description)
            pool = [loaded]
        else:
            capable = [p for p in self._registry.providers.values() if not _incapable(p, route)]
            if not capable:
                raise InvalidArgument(
                    "image" if not route.model else "provider.model",
                    _nobody_can(route, list(self._registry.providers.values())),
                )
            pool = capable
        healthy = [p for p in pool if p.health.health is not Health.UNAVAILABLE]
        if not healthy:
            names = ", ".join(p.name for p in pool)
            raise Unavailable(
                f"every provider able to do this job is unavailable ({names}); retry later",
                retry_after=UNAVAILABLE_RETRY_S,
            )
        ranked = [
            Candidate(
                loaded=p,
                model=route.model or p.manifest.default_model,
                estimated_cost=p.manifest.cost.estimate(*output_size),
            )
            for p in healthy
        ]
        ranked.sort(
            key=lambda c: (
                c.loaded.health.health is Health.DEGRADED,
                c.estimated_cost,
                c.loaded.name,
            )
        )
        return ranked


def _incapable(loaded: LoadedProvider, route: RouteRequest) -> FieldViolation | None:
    manifest = loaded.manifest
    if not manifest.can(route.operation):
        return FieldViolation(
            "provider.provider",
            f"provider {manifest.name!r} cannot {route.operation.value}",
        )
    if route.width * route.height > manifest.max_pixels:
        return FieldViolation(
            "image",
            f"the image has {route.width * route.height} pixels; provider {manifest.name!r} "
            f"takes at most {manifest.max_pixels}",
        )
    if route.model and route.model not in manifest.models:
        return FieldViolation(
            "provider.model",
            f"provider {manifest.name!r} has no model {route.model!r}; "
            f"its models: {', '.join(manifest.models)}",
        )
    if route.upscale and route.upscale not in manifest.upscale_factors:
        return FieldViolation(
            "scale",
            f"provider {manifest.name!r} upscales by "
            f"{', '.join(map(str, manifest.upscale_factors)) or 'no factor'}, not {route.upscale}",
        )
    return None


def _nobody_can(route: RouteRequest, providers: list[LoadedProvider]) -> str:
    if not providers:
        return "no provider is loaded on this server"
    reasons = "; ".join(problem.description for p in providers if (problem := _incapable(p, route)))
    return f"no provider can take this job: {reasons}"
