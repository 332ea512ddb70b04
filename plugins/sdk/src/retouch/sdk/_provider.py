"""The contract every provider plugin implements."""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._context import JobContext
from ._events import Event
from ._manifest import Manifest
from ._requests import EditRequest

ENTRY_POINT_GROUP = "retouch.providers"
"""Entry point group the server discovers providers in. Each entry point names a class
(or zero-argument factory) whose instances implement :class:`Provider`."""


class Health(enum.Enum):
    """Whether a provider takes work."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A provider's own view of its health; ``detail`` says why when not healthy."""

    health: Health
    detail: str = ""


@runtime_checkable
class Provider(Protocol):
    """A plugin that does pixel work.

    Lifecycle: the server calls ``start`` once with the provider's config table (it
    should validate it and fail early), ``run`` for each job, and ``aclose`` on
    shutdown. ``run`` gets the job's :class:`~retouch.sdk.JobContext` (job id,
    deadline, trace headers, the original encoded inputs) beside the request; it is
    an async generator of :class:`~retouch.sdk.Progress` events
    ending with exactly one :class:`~retouch.sdk.Result`; it raises a
    :class:`~retouch.sdk.ProviderError` on failure. Cancelling the job closes the
    generator, which must stop work promptly. Blocking work belongs off the event
    loop (see :func:`~retouch.sdk.run_with_progress`).
    """

    @property
    def manifest(self) -> Manifest: ...

    async def start(self, config: Mapping[str, object]) -> None: ...

    async def aclose(self) -> None: ...

    async def health(self) -> HealthReport: ...

    def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]: ...
