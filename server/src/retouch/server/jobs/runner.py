"""The run stage: the route's providers in order until one returns an image.

A provider that fails in a way worth retrying hands the job to the next candidate,
under the same reservation (its hold adjusted to the new price); a provider whose
circuit breaker is open is skipped, and every call's outcome feeds its breaker.
Progress goes to the job's followers as it comes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass

from retouch.sdk import (
    JobContext,
    Progress,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    Result,
    trace_headers,
)

from ..breaker import Breakers
from ..clock import Clock
from ..edits import PreparedEdit, provider_request
from ..errors import (
    Internal,
    InvalidArgument,
    QuotaViolation,
    ResourceExhausted,
    RetouchError,
    Unavailable,
)
from ..fallback import FailedAttempts
from ..policy import Ledger
from ..policy.upstream import UpstreamLimits
from ..routing import Candidate, LatencyTracker, Route
from ..secrets import scrubbing
from ..telemetry import provider_call
from .context import InputLinks, actual_price
from .events import Progressed
from .live import LiveJob
from .previews import PreviewGate
from .records import JobRecord
from .store import JobStore

log = logging.getLogger(__name__)

PROVIDER_SHARE = 0.9
"""Share of the progress bar given to the provider; encoding and storing take the rest."""


@dataclass(frozen=True, slots=True)
class ProviderOutcome:
    """The provider that did the job, its image, how long it took, and the credits
    to charge for it (its actual cost, at most the price held)."""

    candidate: Candidate
    result: Result
    provider_ms: int
    charge: int


class ProviderRunner:
    """Runs a prepared edit on the route's providers."""

    def __init__(
        self,
        *,
        store: JobStore,
        ledger: Ledger,
        upstream: UpstreamLimits,
        latency: LatencyTracker,
        breakers: Breakers,
        clock: Clock,
        links: InputLinks | None = None,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._upstream = upstream
        self._latency = latency
        self._breakers = breakers
        self._clock = clock
        self._links = links

    async def run(
        self,
        job: JobRecord,
        edit: PreparedEdit,
        route: Route,
        live: LiveJob,
        deadline: float | None = None,
    ) -> tuple[JobRecord, ProviderOutcome]:
        """The job (naming the provider that ran it) and that provider's outcome.

        ``deadline`` is when the job must end, on the clock's monotonic scale; providers
        read their time left from it."""
        urls = await self._links.for_sources(edit.sources) if self._links else (None, None)
        progress = 0.0
        held = route.candidates[0].price
        failed = FailedAttempts(self._breakers)
        previews = PreviewGate(self._clock) if edit.output.previews else None
        for attempt, candidate in enumerate(route.candidates):
            fallbacks_left = attempt + 1 < len(route.candidates)
            if attempt:
                if candidate.price != held:
                    try:
                        await self._ledger.adjust(
                            job.job_id, candidate.price, now=self._clock.now()
                        )
                    except ResourceExhausted as error:
                        failed.add(candidate.name, error)
                        continue
                    held = candidate.price
                job = dataclasses.replace(
                    job,
                    provider=candidate.name,
                    model=candidate.model,
                    lease_until=live.lease_until,  # not the lease the job started with
                )
                await self._store.update_job(job)
                live.publish(Progressed(progress, f"retrying on {candidate.name}"))
            # The first candidate's token was taken with the caller's, when it was admitted.
            wait = await self._upstream.acquire(candidate.name) if attempt else 0.0
            if wait > 0:
                failed.add(
                    candidate.name, _rate_limited(candidate.name, "its upstream rate limit", wait)
                )
                continue
            permit = self._breakers.try_acquire(candidate.name)
            if permit is None:
                breaker = self._breakers.snapshot(candidate.name)
                failed.add(
                    candidate.name,
                    Unavailable(
                        f"provider {candidate.name!r} is unavailable: {breaker.describe()}",
                        retry_after=breaker.reprobe_in_s or 1.0,
                    ),
                )
                continue
            started = time.perf_counter()
            try:
                result: Result | None = None
                with permit:
                    async with provider_call(candidate.name, candidate.model):
                        with scrubbing(candidate.loaded.secrets):
                            # Built inside the provider's span, so that its trace headers
                            # parent the provider's own upstream calls.
                            context = JobContext(
                                job_id=job.job_id,
                                deadline=deadline,
                                clock=self._clock,
                                trace_headers=trace_headers(),
                                image=edit.sources.image,
                                mask=edit.sources.mask,
                                image_url=urls[0],
                                mask_url=urls[1],
                                # The store stage composites every result (keep_unedited).
                                host_composites=True,
                            )
                            request = provider_request(edit, candidate.model)
                            run = candidate.loaded.provider.run(request, context)
                            async with contextlib.aclosing(run) as events:
                                async for event in events:
                                    if isinstance(event, Result):
                                        result = event
                                        break
                                    if isinstance(event, Progress):
                                        progress = max(progress, event.fraction * PROVIDER_SHARE)
                                        update = Progressed(progress, event.stage)
                                        jpeg = None
                                        if previews is not None:
                                            jpeg = await previews.offer(event.preview)
                                        if jpeg is None:
                                            live.publish(update)
                                        else:
                                            live.publish_preview(update, jpeg)
            except ProviderError as error:
                if isinstance(error, ProviderRateLimited):
                    await self._upstream.throttled(candidate.name)
                mapped = _provider_error(candidate, error)
                if not error.retryable:
                    raise mapped from error
                failed.add(candidate.name, mapped)
                if fallbacks_left:
                    log.warning("job %s: %s; falling back", job.job_id, mapped.message)
                continue
            provider_ms = (time.perf_counter() - started) * 1000
            self._latency.record(candidate.name, provider_ms)
            if result is None:
                raise Internal(
                    f"provider {candidate.name!r} ended without a result",
                    reason="PROVIDER_CONTRACT",
                )
            _check_shape(candidate, result, edit.output_size)
            charge = actual_price(job.job_id, candidate, result, edit.output_size)
            return job, ProviderOutcome(candidate, result, int(provider_ms), charge)
        raise failed.final()


def _check_shape(candidate: Candidate, result: Result, size: tuple[int, int]) -> None:
    width, height = size
    if result.image.shape != (height, width, 3) or result.image.dtype.name != "uint8":
        raise Internal(
            f"provider {candidate.name!r} returned a {result.image.shape} "
            f"{result.image.dtype} image; expected ({height}, {width}, 3) uint8",
            reason="PROVIDER_CONTRACT",
        )


def _rate_limited(provider: str, what: str, wait: float) -> ResourceExhausted:
    return ResourceExhausted(
        f"provider {provider!r} is at {what}; retry in {wait:.2f} s",
        violations=[QuotaViolation(f"provider:{provider}", "upstream request rate")],
        retry_after=wait,
    )


def _provider_error(candidate: Candidate, error: ProviderError) -> RetouchError:
    name = candidate.name
    if isinstance(error, ProviderRejected):
        return InvalidArgument(error.field or "image", f"provider {name!r}: {error.message}")
    if isinstance(error, ProviderRateLimited):
        return _rate_limited(
            name, f"its upstream rate limit ({error.message})", error.retry_after or 1.0
        )
    if error.retryable:
        return Unavailable(
            f"provider {name!r} failed: {error.message}", retry_after=error.retry_after or 1.0
        )
    return Internal(f"provider {name!r} failed: {error.message}", reason="PROVIDER_FAILED")
