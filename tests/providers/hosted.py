"""What the hosted-provider tests share: an injected clock and sleep, running a job to
its end, the faults every hosted API is tested with, and (for providers that keep
their own address policy in config) a harness with trace headers and the
unmasked-pixels check."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from retouch.sdk import (
    EditRequest,
    Event,
    InpaintRequest,
    JobContext,
    Progress,
    Provider,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    Result,
)
from retouch.sdk.http import AddressPolicy, HttpRuntime
from retouch.sdk.testing import ManualClock as TestClock
from retouch.sdk.testing import Reply, sample_context
from retouch.server.clock import ManualClock

API_KEY = "sk-test-not-a-real-key-42"
BIG_BODY = 50 * 1024 * 1024
"""A body well over the SDK's default 32 MB cap."""


@dataclass
class Sleeper:
    """The sleep a provider's HTTP client is given: it records each delay and moves the
    manual clock on by it, so retries and polls take no wall time. With ``gate`` set,
    each sleep also waits for the test to set it (a poll loop the test steps through)."""

    clock: ManualClock = field(default_factory=ManualClock)
    delays: list[float] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.advance(delay)
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0)

    def runtime(self) -> HttpRuntime:
        """An HTTP runtime on this clock and sleep, allowed to reach the loopback fake."""
        return HttpRuntime(
            clock=self.clock,
            sleep=self,
            random=lambda: 1.0,
            addresses=AddressPolicy.allowing("127.0.0.1"),
        )

    def context(self, request: EditRequest, *, timeout: float = 600.0) -> JobContext:
        """A job context whose deadline runs on this clock."""
        return sample_context(request, clock=self.clock, timeout=timeout)


async def run_job(
    provider: Provider, request: EditRequest, context: JobContext
) -> tuple[list[Progress], Result]:
    """Run one job to its end; its progress events and its result."""
    async with aclosing(provider.run(request, context)) as events:
        seen: list[Event] = [event async for event in events]
    result = seen[-1]
    assert isinstance(result, Result), f"the job ended with {result!r}, not a Result"
    return [e for e in seen if isinstance(e, Progress)], result


async def job_error(provider: Provider, request: EditRequest, context: JobContext) -> ProviderError:
    """Run one job that must fail; the ProviderError it failed with."""
    try:
        await run_job(provider, request, context)
    except ProviderError as exc:
        return exc
    raise AssertionError("the job succeeded; it should have failed")


def http_date(clock: ManualClock, seconds_ahead: float) -> str:
    """An HTTP-date ``seconds_ahead`` of the clock's wall time."""
    return email.utils.formatdate(clock.now() + seconds_ahead, usegmt=True)


@dataclass(frozen=True)
class Transient:
    """A fault the client must retry through: the first answers, then the API's own."""

    name: str
    replies: Callable[[ManualClock], list[Reply]]
    delays: list[float]
    """The waits the retries must take (random jitter is pinned to its ceiling)."""


TRANSIENTS = [
    Transient(
        "429 retry-after seconds", lambda _: [Reply.error(429, headers={"Retry-After": "3"})], [3.0]
    ),
    Transient(
        "429 retry-after date",
        lambda clock: [Reply.error(429, headers={"Retry-After": http_date(clock, 7)})],
        [7.0],
    ),
    Transient("500", lambda _: [Reply.error(500)], [0.5]),
    Transient("502", lambda _: [Reply.error(502)], [0.5]),
    Transient("503 twice", lambda _: [Reply.error(503), Reply.error(503)], [0.5, 1.0]),
    Transient("connection reset", lambda _: [Reply.reset()], [0.5]),
]


@dataclass(frozen=True)
class Fatal:
    """A fault that must fail the job, with the error it must become."""

    name: str
    replies: Callable[[], list[Reply]]
    error: type[ProviderError]


FATALS = [
    Fatal("429 outlasting the retries", lambda: [Reply.error(429)] * 3, ProviderRateLimited),
    Fatal("503 outlasting the retries", lambda: [Reply.error(503)] * 3, ProviderUnavailable),
    Fatal("malformed JSON", lambda: [Reply.malformed_json()], ProviderBadResponse),
    Fatal("wrong content type", lambda: [Reply.wrong_type()], ProviderBadResponse),
    Fatal("50 MB body over the cap", lambda: [Reply.oversize(BIG_BODY)], ProviderBadResponse),
    Fatal(
        "50 MB body announced over the cap",
        lambda: [Reply.oversize(BIG_BODY, announce=True)],
        ProviderBadResponse,
    ),
]


def assert_timeout(error: ProviderError) -> None:
    """A stall past the socket read timeout ends as a retryable timeout."""
    assert isinstance(error, ProviderTimeout), f"{type(error).__name__}: {error}"
    assert error.retryable


def secret_free(error: ProviderError) -> None:
    """The key never shows in what callers and logs see."""
    assert API_KEY not in str(error), str(error)


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Harness:
    """A manual clock (its sleeps move it at once, recorded in ``clock.sleeps``) and the
    runtime a provider is built with: jitter fixed at half the window, and no address
    allowed beyond the default policy, so each test's config decides what downloads
    may reach. Contexts carry a trace header."""

    clock: TestClock = field(default_factory=TestClock)
    runtime: HttpRuntime = field(init=False)

    def __post_init__(self) -> None:
        self.runtime = HttpRuntime(clock=self.clock, sleep=self.clock.sleep, random=lambda: 0.5)

    def context(self, request: EditRequest, *, timeout: float | None = 60.0) -> JobContext:
        """The context the server would give ``request``, its deadline on the clock."""
        return sample_context(
            request, clock=self.clock, timeout=timeout, trace_headers={"traceparent": TRACEPARENT}
        )


def assert_kept_unmasked(request: InpaintRequest, out: NDArray[np.uint8]) -> None:
    """The result has the input's shape, its unmasked pixels are the input's exactly,
    and its masked pixels are the model's (the fakes invert everything they paint)."""
    assert out.shape == request.image.shape
    keep = request.mask == 0
    np.testing.assert_array_equal(out[keep], request.image[keep])
    painted = ~keep
    assert (out[painted] != request.image[painted]).mean() > 0.9
