"""Provider plugins that are wrong in one way each, for the discovery tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from retouch.sdk import (
    EditRequest,
    Event,
    Health,
    HealthReport,
    JobContext,
    Manifest,
    Operation,
    Result,
)


def manifest(name: str, **changes: object) -> Manifest:
    fields: dict[str, object] = {
        "name": name,
        "version": "0.0.1",
        "description": "test plugin",
        "operations": frozenset({Operation.ENHANCE}),
        "models": ("only",),
        "max_pixels": 1_000_000,
    }
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


class Good:
    """A minimal valid provider that returns its input."""

    name = "good"

    def __init__(self) -> None:
        self.manifest = manifest(self.name)

    async def start(self, config: Mapping[str, object]) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def health(self) -> HealthReport:
        return HealthReport(Health.HEALTHY)

    async def run(self, request: EditRequest, context: JobContext) -> AsyncIterator[Event]:
        yield Result(request.image)


class NoManifest(Good):
    def __init__(self) -> None:
        self.manifest = {"name": "no-manifest"}  # type: ignore[assignment]


class OldSdk(Good):
    def __init__(self) -> None:
        self.manifest = manifest("old-sdk", sdk_api_version=0)


class SyncStart(Good):
    def __init__(self) -> None:
        self.manifest = manifest("sync-start")

    def start(self, config: Mapping[str, object]) -> None:  # type: ignore[override]
        return None


class BadConfig(Good):
    def __init__(self) -> None:
        self.manifest = manifest("bad-config")

    async def start(self, config: Mapping[str, object]) -> None:
        raise ValueError("unknown setting 'colour'")


class Explodes(Good):
    def __init__(self) -> None:
        raise RuntimeError("boom")


class Misnamed(Good):
    def __init__(self) -> None:
        self.manifest = manifest("something-else")
