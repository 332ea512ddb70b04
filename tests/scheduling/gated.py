"""A provider of capacity 1 whose calls each wait until the test lets them finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from retouch.sdk import (
    CostModel,
    EditRequest,
    EnhanceKind,
    Event,
    Health,
    HealthReport,
    JobContext,
    Manifest,
    Operation,
    Result,
)


class GatedProvider:
    """Runs one job at a time (``capacity``); each call records its job, then waits
    for :meth:`finish_one` before it answers with its input."""

    def __init__(self, name: str = "gated", *, capacity: int = 1, credits_per_job: int = 0) -> None:
        self.name = name
        self.manifest = Manifest(
            name=name,
            version="1.0.0",
            description="a provider that finishes a job when the test says",
            operations=frozenset({Operation.ENHANCE}),
            models=("gate",),
            max_pixels=16_777_216,
            enhance_kinds=frozenset({EnhanceKind.DENOISE}),
            capacity=capacity,
            cost=CostModel(credits_per_job=credits_per_job),
        )
        self.started: list[str] = []
        """Job ids, in the order their calls began."""
        self.in_flight = 0
        self.most_in_flight = 0
        self._started = asyncio.Condition()
        self._gate: asyncio.Queue[None] = asyncio.Queue()

    async def start(self, config: Mapping[str, object]) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def health(self) -> HealthReport:
        return HealthReport(Health.HEALTHY)

    async def run(self, request: EditRequest, context: JobContext) -> AsyncIterator[Event]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            async with self._started:
                self.started.append(context.job_id)
                self._started.notify_all()
            await self._gate.get()
            yield Result(request.image)
        finally:
            self.in_flight -= 1

    def finish_one(self) -> None:
        """Let one running (or the next) call answer."""
        self._gate.put_nowait(None)

    async def until_started(self, count: int) -> None:
        """Wait until ``count`` calls have begun."""
        async with self._started:
            await self._started.wait_for(lambda: len(self.started) >= count)
