"""In-process stand-ins for hosted providers, scripted by the test that runs them.

Unlike the SDK's ``FakeProvider`` they answer the way a careless hosted model does: the
whole image comes back changed, masked or not, so the tests see that the server's
compositing is what keeps unmasked pixels exact.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Mapping

import numpy as np

from retouch.sdk import (
    CostModel,
    EditRequest,
    Event,
    Health,
    HealthReport,
    JobContext,
    Manifest,
    Operation,
    OutpaintRequest,
    ProviderError,
    ProviderUnavailable,
    Result,
    Secret,
)


class ScriptedHosted:
    """A paid remote provider whose next answers the test queues.

    ``script`` holds what the next calls do, in order: ``None`` answers with an image,
    a :class:`ProviderError` is raised. Once the script is used up every call answers
    ``otherwise`` (default: an image). ``hold``, when set, keeps each call waiting
    until the test sets it. ``calls`` counts the requests that reached the provider,
    ``contexts`` holds the job context each one came with.
    """

    def __init__(
        self,
        name: str,
        *,
        credits_per_job: int = 2,
        quality_rank: int = 5,
        operations: Iterable[Operation] = (Operation.INPAINT, Operation.OUTPAINT),
    ) -> None:
        ops = frozenset(operations)
        self.manifest = Manifest(
            name=name,
            version="1.0.0",
            description="scripted hosted provider for tests",
            operations=ops,
            models=("hosted-v1",),
            max_pixels=16_777_216,
            supports_mask=Operation.INPAINT in ops,
            supports_outpaint=Operation.OUTPAINT in ops,
            cost=CostModel(credits_per_job=credits_per_job),
            remote=True,
            quality_rank=quality_rank,
        )
        self.script: deque[ProviderError | None] = deque()
        self.otherwise: ProviderError | None = None
        self.hold: asyncio.Event | None = None
        self.calls = 0
        self.contexts: list[JobContext] = []
        self.entered = asyncio.Event()
        self.config: Mapping[str, object] | None = None
        self.health_report = HealthReport(Health.HEALTHY)

    def answer(self, *outcomes: ProviderError | None) -> None:
        """Queue what the next calls do."""
        self.script.extend(outcomes)

    async def start(self, config: Mapping[str, object]) -> None:
        self.config = dict(config)

    async def aclose(self) -> None:
        return None

    async def health(self) -> HealthReport:
        return self.health_report

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        self.calls += 1
        self.contexts.append(context)
        self.entered.set()
        outcome = self.script.popleft() if self.script else self.otherwise
        if self.hold is not None:
            await self.hold.wait()
        if outcome is not None:
            raise outcome
        if isinstance(request, OutpaintRequest):
            width, height = request.output_size
        else:
            height, width = request.image.shape[:2]
        # Every pixel differs from the input's: unmasked ones must be put back by the server.
        changed = np.full((height, width, 3), 7, np.uint8)
        changed[: request.image.shape[0], : request.image.shape[1]] ^= request.image
        yield Result(changed, {"provider": self.manifest.name})


class KeyedHosted(ScriptedHosted):
    """A hosted provider loaded through an entry point, whose ``start`` requires an
    ``api_key`` secret. Its upstream, when scripted to fail, echoes the key back."""

    def __init__(self, name: str = "keyed") -> None:
        super().__init__(name, credits_per_job=0)
        self.api_key: Secret | None = None

    async def start(self, config: Mapping[str, object]) -> None:
        key = config.get("api_key")
        if not isinstance(key, Secret):
            raise ValueError(f"api_key must be a retouch.sdk.Secret, not {type(key).__name__}")
        self.api_key = key
        await super().start(config)

    def echo_key(self) -> ProviderUnavailable:
        """The error a careless upstream answers a bad key with."""
        assert self.api_key is not None
        return ProviderUnavailable(f"401 Unauthorized: invalid token {self.api_key.reveal()}")


class KeyedStartFails(KeyedHosted):
    """A provider whose start fails with a message that holds its key."""

    def __init__(self) -> None:
        super().__init__("keyed-start-fails")

    async def start(self, config: Mapping[str, object]) -> None:
        key = config.get("api_key")
        assert isinstance(key, Secret)
        raise RuntimeError(f"the upstream refused the key {key.reveal()}")
