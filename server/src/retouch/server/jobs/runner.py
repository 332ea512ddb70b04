"""Running one job: providers in the router's order, progress out, result stored,
money settled. Every path ends in exactly one terminal state and one settlement."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from retouch.sdk import (
    JobContext,
    Progress,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    Result,
    trace_headers,
)
from retouch.v1 import image_edit_pb2 as pb

from ..clock import Clock
from ..convert import image_info, routing_decision
from ..edits import PreparedEdit, off_loop
from ..errors import (
    Cancelled,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    QuotaViolation,
    ResourceExhausted,
    RetouchError,
    Unavailable,
    status_code_name,
)
from ..ids import new_id
from ..imaging import CONTENT_TYPES, encode_image
from ..policy import Balance, Ledger, Plan
from ..policy.upstream import UpstreamLimits
from ..routing import Candidate, LatencyTracker, Route
from ..storage import ObjectStore
from ..telemetry import job_finished, job_started, provider_call, stage, stored_bytes
from .live import LiveJob
from .records import JobRecord, JobState, ResultRecord
from .store import JobStore

log = logging.getLogger(__name__)

PROVIDER_SHARE = 0.9
"""Share of the progress bar given to the provider; encoding and storing take the rest."""

OK = status_pb2.Status(code=0)


class JobEnded(RetouchError):
    """A followed job ended without success; carries its recorded status."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status
        self.code = grpc.StatusCode.UNKNOWN

    def to_status(self) -> grpc.Status:
        return rpc_status.to_status(self.status)

    def to_status_proto(self) -> status_pb2.Status:
        return self.status


@dataclass(frozen=True, slots=True)
class Admission:
    """Everything decided before a job starts: the edit, its route, plan and hold."""

    record: JobRecord
    prepared: PreparedEdit
    route: Route
    plan: Plan | None
    balance: Balance | None
    time_limit: float | None


class JobRunner:
    """Executes admitted jobs."""

    def __init__(
        self,
        *,
        store: JobStore,
        objects: ObjectStore,
        clock: Clock,
        ledger: Ledger | None,
        upstream: UpstreamLimits | None,
        latency: LatencyTracker,
    ) -> None:
        self._store = store
        self._objects = objects
        self._clock = clock
        self._ledger = ledger
        self._upstream = upstream
        self._latency = latency

    async def run(self, live: LiveJob, admission: Admission) -> None:
        record = admission.record
        job_started(record, admission.prepared.route.width, admission.prepared.route.height)
        try:
            limit = admission.time_limit
            deadline = None if limit is None else self._clock.monotonic() + limit
            async with asyncio.timeout(limit):
                record = await self._execute(live, admission, deadline)
            await self._finish(live, record, None)
        except asyncio.CancelledError:
            await self._finish(
                live, record, live.cancel_reason or Cancelled("the job was cancelled")
            )
            raise
        except TimeoutError:
            await self._finish(
                live,
                record,
                DeadlineExceeded("the caller's deadline passed before the job finished"),
            )
        except RetouchError as error:
            await self._finish(live, record, error)
        except Exception:
            log.exception("job %s failed unexpectedly", record.job_id)
            await self._finish(
                live,
                record,
                Internal(
                    "the job failed because of a server error; it has been logged",
                    reason="JOB_FAILED",
                ),
            )

    async def _execute(
        self, live: LiveJob, admission: Admission, deadline: float | None
    ) -> JobRecord:
        record, prepared, route = admission.record, admission.prepared, admission.route
        first = route.candidates[0]
        plan, balance = admission.plan, admission.balance
        quota_left = -1
        credits_left = -1
        if plan is not None and balance is not None:
            if plan.monthly_jobs is not None:
                quota_left = max(0, plan.monthly_jobs - balance.jobs_used)
            if plan.credits:
                credits_left = balance.available
        await self._publish(
            live,
            accepted=pb.Accepted(
                provider=first.name,
                model=first.model,
                estimated_cost_credits=first.price,
                quota_left=quota_left,
                seed=prepared.seed,
                input_width=prepared.route.width,
                input_height=prepared.route.height,
                routing=routing_decision(route),
                credits_left=credits_left,
            ),
        )
        progress = 0.0
        held = first.price
        last_error: RetouchError | None = None
        for attempt, candidate in enumerate(route.candidates):
            fallbacks_left = attempt + 1 < len(route.candidates)
            if attempt:
                if candidate.price != held and self._ledger is not None:
                    try:
                        await self._ledger.adjust(
                            record.job_id, candidate.price, now=self._clock.now()
                        )
                    except ResourceExhausted as error:
                        last_error = error
                        continue
                    held = candidate.price
                record = dataclasses.replace(record, provider=candidate.name, model=candidate.model)
                await self._store.update_job(record)
                await self._publish(
                    live,
                    progress=pb.Progress(fraction=progress, stage=f"retrying on {candidate.name}"),
                )
            wait = await self._upstream.acquire(candidate.name) if self._upstream else 0.0
            if wait > 0:
                last_error = _rate_limited(candidate.name, "its upstream rate limit", wait)
                continue
            started = time.perf_counter()
            try:
                result: Result | None = None
                request = prepared.make_request(candidate.model, prepared.seed)
                provider = candidate.loaded.provider
                async with provider_call(candidate.name, candidate.model):
                    # Built inside the provider's span, so that its trace headers parent
                    # the provider's upstream calls.
                    context = JobContext(
                        job_id=record.job_id,
                        deadline=deadline,
                        clock=self._clock,
                        trace_headers=trace_headers(),
                    )
                    async with contextlib.aclosing(provider.run(request, context)) as events:
                        async for event in events:
                            if isinstance(event, Result):
                                result = event
                                break
                            if isinstance(event, Progress):
                                progress = max(progress, event.fraction * PROVIDER_SHARE)
                                await self._publish(
                                    live,
                                    progress=pb.Progress(fraction=progress, stage=event.stage),
                                )
            except ProviderError as error:
                if isinstance(error, ProviderRateLimited) and self._upstream is not None:
                    self._upstream.throttled(candidate.name)
                last_error = _provider_error(candidate, error)
                if error.retryable and fallbacks_left:
                    log.warning(
                        "job %s: provider %s failed (%s); falling back",
                        record.job_id,
                        candidate.name,
                        error.message,
                    )
                    continue
                raise last_error from error
            provider_ms = (time.perf_counter() - started) * 1000
            self._latency.record(candidate.name, provider_ms)
            if result is None:
                raise Internal(
                    f"provider {candidate.name!r} ended without a result",
                    reason="PROVIDER_CONTRACT",
                )
            with stage("storage"):
                retention_s = plan.retention_days * 86_400 if plan is not None else 0
                return await self._store_result(
                    live, record, prepared, candidate, result, int(provider_ms), retention_s
                )
        assert last_error is not None
        raise last_error

    async def _store_result(
        self,
        live: LiveJob,
        record: JobRecord,
        prepared: PreparedEdit,
        candidate: Candidate,
        result: Result,
        provider_ms: int,
        retention_s: float,
    ) -> JobRecord:
        width, height = prepared.output_size
        if result.image.shape != (height, width, 3) or result.image.dtype.name != "uint8":
            raise Internal(
                f"provider {candidate.name!r} returned a {result.image.shape} "
                f"{result.image.dtype} image; expected ({height}, {width}, 3) uint8",
                reason="PROVIDER_CONTRACT",
            )
        await self._publish(live, progress=pb.Progress(fraction=PROVIDER_SHARE, stage="encode"))
        output = prepared.output

        def finish_and_encode() -> bytes:
            return encode_image(prepared.finish(result.image), output.format, output.quality)

        data = await off_loop(finish_and_encode, size=width * height * 3 // 4)
        tenant, subject = record.owner.split("/", 1)
        extension = output.format.lower().replace("jpeg", "jpg")
        key = f"results/{tenant}/{subject}/{record.job_id}.{extension}"
        content_type = CONTENT_TYPES[output.format]
        # Readable at once, durable before the job is charged: the caller sees Completed
        # a disk flush sooner, and a crash in between fails and refunds the job.
        await self._objects.put(key, data, content_type=content_type, durable=False)
        stored_bytes(len(data), output.format)
        stored = ResultRecord(
            result_id=new_id("res", self._clock),
            job_id=record.job_id,
            owner=record.owner,
            object_key=key,
            content_type=content_type,
            format=output.format,
            width=width,
            height=height,
            size_bytes=len(data),
            created_at=self._clock.now(),
            expires_at=self._clock.now() + retention_s if retention_s else 0.0,
        )
        await self._store.add_result(stored)
        live.inline_data = data
        await self._publish(
            live,
            completed=pb.Completed(
                result_id=stored.result_id,
                image=image_info(stored),
                seed=prepared.seed,
                cost_credits=candidate.price,
                provider_ms=provider_ms,
            ),
        )
        await self._objects.sync(key)
        return dataclasses.replace(record, result_id=stored.result_id, cost_credits=candidate.price)

    async def _publish(self, live: LiveJob, **event: object) -> None:
        # Events live in memory while the job runs and are written once, when it ends:
        # followers of a running job read them from memory, and a job that dies with
        # its server is failed at the next start, with nothing to replay.
        message = pb.JobEvent(job_id=live.job_id, seq=live.last_seq + 1, **event)  # type: ignore[arg-type]
        live.publish(message)

    async def _finish(self, live: LiveJob, record: JobRecord, error: RetouchError | None) -> None:
        """Record the terminal state, then settle the money: charge or refund."""
        final, status = terminal(record, error, self._clock.now(), live.last_seq)
        job_finished(final)
        try:
            await self._store.append_events(
                live.job_id, [(e.seq, e.SerializeToString()) for e in live.events]
            )
            await self._store.update_job(final)
            if self._ledger is not None:
                if error is None:
                    await self._ledger.commit(
                        final.job_id, final.cost_credits, now=self._clock.now()
                    )
                else:
                    await self._ledger.release(
                        final.job_id, now=self._clock.now(), note=final.error_code
                    )
        except Exception:
            # The sweeper settles the reservation from the job's recorded state later.
            log.exception("job %s: recording its end failed", final.job_id)
        finally:
            live.finish(status)


def terminal(
    record: JobRecord, error: RetouchError | None, now: float, last_seq: int
) -> tuple[JobRecord, status_pb2.Status]:
    """The record of a job that ended with ``error`` (None for success), and its status."""
    if error is None:
        return (
            dataclasses.replace(
                record, state=JobState.SUCCEEDED, updated_at=now, last_seq=last_seq
            ),
            OK,
        )
    status = error.to_status_proto()
    cancelled = isinstance(error, Cancelled | DeadlineExceeded)
    final = dataclasses.replace(
        record,
        state=JobState.CANCELLED if cancelled else JobState.FAILED,
        updated_at=now,
        last_seq=last_seq,
        error_code=status_code_name(status.code),
        error_message=status.message,
        final_status=status.SerializeToString(),
        cost_credits=0,
    )
    return final, status


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
