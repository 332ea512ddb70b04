"""What the hosted providers' tests share: an HTTP runtime on a manual clock, job
contexts on that clock, running a job to its end, and the unmasked-pixels check."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from retouch.sdk import EditRequest, Event, InpaintRequest, JobContext, Progress, Result
from retouch.sdk.http import HttpRuntime
from retouch.sdk.testing import ManualClock, sample_context

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Harness:
    """A manual clock (its sleeps move it at once, recorded in ``clock.sleeps``) and
    the runtime a provider is built with; jitter is fixed at half the window."""

    clock: ManualClock = field(default_factory=ManualClock)
    runtime: HttpRuntime = field(init=False)

    def __post_init__(self) -> None:
        self.runtime = HttpRuntime(clock=self.clock, sleep=self.clock.sleep, random=lambda: 0.5)

    def context(self, request: EditRequest, *, timeout: float | None = 60.0) -> JobContext:
        """The context the server would give ``request``, its deadline on the clock."""
        return sample_context(
            request,
            clock=self.clock,
            timeout=timeout,
            trace_headers={"traceparent": TRACEPARENT},
        )


Run = Callable[[EditRequest, JobContext], AsyncGenerator[Event, None]]


async def run_job(
    run: Run, request: EditRequest, context: JobContext
) -> tuple[list[Progress], Result]:
    """Run one job to its end: its progress events and its result."""
    async with aclosing(run(request, context)) as events:
        seen = [event async for event in events]
    result = seen[-1]
    assert isinstance(result, Result), seen
    progress = [event for event in seen if isinstance(event, Progress)]
    assert all(isinstance(event, Progress) for event in seen[:-1])
    return progress, result


def assert_kept_unmasked(request: InpaintRequest, out: NDArray[np.uint8]) -> None:
    """The result has the input's shape, its unmasked pixels are the input's exactly,
    and its masked pixels are the model's (the fakes invert everything they paint)."""
    assert out.shape == request.image.shape
    keep = request.mask == 0
    np.testing.assert_array_equal(out[keep], request.image[keep])
    painted = ~keep
    assert (out[painted] != request.image[painted]).mean() > 0.9
