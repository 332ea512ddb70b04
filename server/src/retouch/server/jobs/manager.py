"""Jobs from submission to a terminal state: idempotency, execution, fan-out, recovery.

Every job ends SUCCEEDED, FAILED or CANCELLED — including jobs whose client went away,
whose deadline passed, whose provider failed, and jobs that were running when the
server stopped (failed at the next start by :meth:`JobManager.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from retouch.sdk import (
    Progress,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    Result,
)
from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb

from ..auth import Caller
from ..clock import Clock
from ..convert import FORMATS
from ..edits import PreparedEdit
from ..errors import (
    Cancelled,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    QuotaViolation,
    ResourceExhausted,
    RetouchError,
    Unavailable,
    status_code_name,
)
from ..ids import new_id
from ..imaging import CONTENT_TYPES, encode_image
from ..routing import Candidate, Router
from ..storage import ObjectStore
from .live import LiveJob
from .records import JobRecord, JobState, ResultRecord
from .store import DuplicateRequest, JobStore

log = logging.getLogger(__name__)

PROVIDER_SHARE = 0.9
"""Share of the progress bar given to the provider; encoding and storing take the rest."""

_OK = status_pb2.Status(code=0)


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
class Submission:
    """An edit request as the manager sees it."""

    caller: Caller
    request_id: str
    fingerprint: str
    prepare: Callable[[], Awaitable[PreparedEdit]]
    timeout: float | None = None
    """Seconds until the caller's deadline, if it set one."""


class JobManager:
    """Starts jobs, runs them to a terminal state, and lets streams follow them."""

    def __init__(self, store: JobStore, objects: ObjectStore, router: Router, clock: Clock) -> None:
        self._store = store
        self._objects = objects
        self._router = router
        self._clock = clock
        self._live: dict[str, LiveJob] = {}
        self._pending: dict[tuple[str, str], tuple[str, asyncio.Future[str]]] = {}
        self.closing = False

    # -- submission ------------------------------------------------------------------

    async def submit(self, submission: Submission) -> str:
        """Start the job, or return the job an earlier call with the same request_id made."""
        caller, request_id = submission.caller, submission.request_id
        if not request_id:
            return await self._start(submission)
        key = (caller.owner, request_id)
        while True:
            pending = self._pending.get(key)
            if pending is not None:
                fingerprint, future = pending
                _same_request(fingerprint, submission.fingerprint)
                with contextlib.suppress(Exception):
                    return await asyncio.shield(future)
                continue  # the first attempt failed validation; try ourselves
            existing = await self._store.find_by_request(caller.owner, request_id)
            if existing is not None:
                _same_request(existing.fingerprint, submission.fingerprint)
                return existing.job_id
            break
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = (submission.fingerprint, started)
        try:
            job_id = await self._start(submission)
        except BaseException as exc:
            started.set_exception(exc if isinstance(exc, Exception) else Cancelled("cancelled"))
            started.exception()  # retrieved here; waiters retry on their own
            raise
        else:
            started.set_result(job_id)
            return job_id
        finally:
            del self._pending[key]

    async def _start(self, submission: Submission) -> str:
        if self.closing:
            raise Unavailable("the server is shutting down; retry on another replica or later")
        prepared = await submission.prepare()
        candidates = self._router.candidates(prepared.route, prepared.output_size)
        caller = submission.caller
        now = self._clock.now()
        first = candidates[0]
        record = JobRecord(
            job_id=new_id("job", self._clock),
            owner=caller.owner,
            subject=caller.subject,
            request_id=submission.request_id,
            fingerprint=submission.fingerprint,
            operation=prepared.operation.value,
            state=JobState.RUNNING,
            provider=first.loaded.name,
            model=first.model,
            seed=prepared.seed,
            created_at=now,
            updated_at=now,
        )
        try:
            await self._store.create_job(record)
        except DuplicateRequest as duplicate:
            _same_request(duplicate.existing.fingerprint, submission.fingerprint)
            return duplicate.existing.job_id
        live = LiveJob(record.job_id, record.owner)
        self._live[record.job_id] = live
        live.task = asyncio.create_task(
            self._run(live, record, prepared, candidates, submission.timeout),
            name=f"job {record.job_id}",
        )
        return record.job_id

    # -- following -------------------------------------------------------------------

    async def follow(
        self, job_id: str, caller: Caller, after_seq: int = 0
    ) -> AsyncIterator[pb.JobEvent]:
        """The job's events after ``after_seq``, live while it runs.

        Ends normally when the job succeeded; raises :class:`JobEnded` with the job's
        recorded status when it failed or was cancelled.
        """
        live = self._live.get(job_id)
        if live is not None and live.owner == caller.owner:
            async for event in live.follow(after_seq):
                yield event
            status = await live.wait_finished()
        else:
            record = await self.get(job_id, caller)
            if not record.state.terminal:
                raise Unavailable(
                    "the job runs on another replica that is not reachable; retry",
                    retry_after=1.0,
                )
            for payload in await self._store.events_after(job_id, after_seq):
                yield pb.JobEvent.FromString(payload)
            status = (
                status_pb2.Status.FromString(record.final_status) if record.final_status else _OK
            )
        if status.code != 0:
            raise JobEnded(status)

    def live_job(self, job_id: str) -> LiveJob | None:
        return self._live.get(job_id)

    async def get(self, job_id: str, caller: Caller) -> JobRecord:
        record = await self._store.get_job(job_id) if job_id else None
        if record is None or record.owner != caller.owner:
            raise NotFound(f"job {job_id!r} not found")
        return record

    async def cancel(
        self, job_id: str, caller: Caller, reason: RetouchError | None = None
    ) -> JobRecord:
        """Cancel a running job and wait until it has recorded its end."""
        record = await self.get(job_id, caller)
        live = self._live.get(job_id)
        if live is not None and live.cancel(
            reason or Cancelled("the job was cancelled by CancelJob")
        ):
            await live.wait_finished()
            record = await self.get(job_id, caller)
        return record

    def abandon(self, job_id: str, reason: RetouchError) -> None:
        """The stream that started the job went away: stop the job."""
        live = self._live.get(job_id)
        if live is not None:
            live.cancel(reason)

    # -- running ---------------------------------------------------------------------

    async def _run(
        self,
        live: LiveJob,
        record: JobRecord,
        prepared: PreparedEdit,
        candidates: list[Candidate],
        time_limit: float | None,
    ) -> None:
        try:
            async with asyncio.timeout(time_limit):
                record = await self._execute(live, record, prepared, candidates)
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
        finally:
            self._live.pop(live.job_id, None)

    async def _execute(
        self,
        live: LiveJob,
        record: JobRecord,
        prepared: PreparedEdit,
        candidates: list[Candidate],
    ) -> JobRecord:
        first = candidates[0]
        await self._publish(
            live,
            accepted=pb.Accepted(
                provider=first.loaded.name,
                model=first.model,
                estimated_cost_credits=first.estimated_cost,
                quota_left=-1,
                seed=prepared.seed,
                input_width=prepared.route.width,
                input_height=prepared.route.height,
            ),
        )
        progress = 0.0
        last_error: RetouchError | None = None
        for attempt, candidate in enumerate(candidates):
            if attempt:
                record = dataclasses.replace(
                    record, provider=candidate.loaded.name, model=candidate.model
                )
                await self._store.update_job(record)
                await self._publish(
                    live,
                    progress=pb.Progress(
                        fraction=progress, stage=f"retrying on {candidate.loaded.name}"
                    ),
                )
            started = time.perf_counter()
            try:
                result: Result | None = None
                request = prepared.make_request(candidate.model, prepared.seed)
                async with contextlib.aclosing(candidate.loaded.provider.run(request)) as events:
                    async for event in events:
                        if isinstance(event, Result):
                            result = event
                            break
                        if isinstance(event, Progress):
                            progress = max(progress, event.fraction * PROVIDER_SHARE)
                            await self._publish(
                                live, progress=pb.Progress(fraction=progress, stage=event.stage)
                            )
            except ProviderError as error:
                last_error = _provider_error(candidate, error)
                if error.retryable and attempt + 1 < len(candidates):
                    log.warning(
                        "job %s: provider %s failed (%s); falling back",
                        record.job_id,
                        candidate.loaded.name,
                        error.message,
                    )
                    continue
                raise last_error from error
            provider_ms = int((time.perf_counter() - started) * 1000)
            if result is None:
                raise Internal(
                    f"provider {candidate.loaded.name!r} ended without a result",
                    reason="PROVIDER_CONTRACT",
                )
            return await self._store_result(live, record, prepared, candidate, result, provider_ms)
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
    ) -> JobRecord:
        width, height = prepared.output_size
        if result.image.shape != (height, width, 3) or result.image.dtype.name != "uint8":
            raise Internal(
                f"provider {candidate.loaded.name!r} returned a {result.image.shape} "
                f"{result.image.dtype} image; expected ({height}, {width}, 3) uint8",
                reason="PROVIDER_CONTRACT",
            )
        await self._publish(live, progress=pb.Progress(fraction=PROVIDER_SHARE, stage="encode"))
        output = prepared.output

        def finish_and_encode() -> bytes:
            return encode_image(prepared.finish(result.image), output.format, output.quality)

        data = await asyncio.to_thread(finish_and_encode)
        caller_subject = record.owner.split("/", 1)
        result_id = new_id("res", self._clock)
        extension = output.format.lower().replace("jpeg", "jpg")
        key = f"results/{caller_subject[0]}/{caller_subject[1]}/{record.job_id}.{extension}"
        content_type = CONTENT_TYPES[output.format]
        await self._objects.put(key, data, content_type=content_type)
        stored = ResultRecord(
            result_id=result_id,
            job_id=record.job_id,
            owner=record.owner,
            object_key=key,
            content_type=content_type,
            format=output.format,
            width=width,
            height=height,
            size_bytes=len(data),
            created_at=self._clock.now(),
        )
        await self._store.add_result(stored)
        live.inline_data = data
        cost = candidate.estimated_cost
        await self._publish(
            live,
            completed=pb.Completed(
                result_id=result_id,
                image=common_pb2.ImageInfo(
                    width=width,
                    height=height,
                    format=FORMATS[output.format],
                    size_bytes=len(data),
                    content_type=content_type,
                ),
                seed=prepared.seed,
                cost_credits=cost,
                provider_ms=provider_ms,
            ),
        )
        return dataclasses.replace(record, result_id=result_id, cost_credits=cost)

    async def _publish(self, live: LiveJob, **event: object) -> None:
        message = pb.JobEvent(job_id=live.job_id, seq=live.last_seq + 1, **event)  # type: ignore[arg-type]
        await self._store.append_event(live.job_id, message.seq, message.SerializeToString())
        live.publish(message)

    async def _finish(self, live: LiveJob, record: JobRecord, error: RetouchError | None) -> None:
        now = self._clock.now()
        if error is None:
            final = dataclasses.replace(
                record, state=JobState.SUCCEEDED, updated_at=now, last_seq=live.last_seq
            )
            status = _OK
        else:
            status = error.to_status_proto()
            cancelled = isinstance(error, Cancelled | DeadlineExceeded)
            final = dataclasses.replace(
                record,
                state=JobState.CANCELLED if cancelled else JobState.FAILED,
                updated_at=now,
                last_seq=live.last_seq,
                error_code=status_code_name(status.code),
                error_message=status.message,
                final_status=status.SerializeToString(),
                cost_credits=0,
            )
        await self._store.update_job(final)
        live.finish(status)

    # -- lifecycle -------------------------------------------------------------------

    async def recover(self) -> int:
        """Fail the jobs a previous process left unfinished; returns how many."""
        stopped = Unavailable(
            "the server stopped while this job ran; submit it again with a new request_id"
        ).to_status_proto()
        count = 0
        for record in await self._store.unfinished_jobs():
            if record.job_id in self._live:
                continue
            await self._store.update_job(
                dataclasses.replace(
                    record,
                    state=JobState.FAILED,
                    updated_at=self._clock.now(),
                    error_code=status_code_name(stopped.code),
                    error_message=stopped.message,
                    final_status=stopped.SerializeToString(),
                    cost_credits=0,
                )
            )
            count += 1
        if count:
            log.warning("failed %d job(s) left unfinished by a previous run", count)
        return count

    async def shutdown(self, grace: float) -> None:
        """Let running jobs finish for ``grace`` seconds, then fail the rest."""
        self.closing = True
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        reason = Unavailable(
            "the server shut down before the job finished; submit it again with a new request_id"
        )
        for live in list(self._live.values()):
            live.cancel(reason)
        remaining = [t for t in tasks if not t.done()]
        if remaining:
            await asyncio.wait(remaining, timeout=5.0)


def _same_request(recorded: str, fingerprint: str) -> None:
    if recorded != fingerprint:
        raise InvalidArgument(
            "request_id",
            "this request_id was already used for a different request; "
            "use a new request_id for a new request",
        )


def _provider_error(candidate: Candidate, error: ProviderError) -> RetouchError:
    name = candidate.loaded.name
    if isinstance(error, ProviderRejected):
        return InvalidArgument(error.field or "image", f"provider {name!r}: {error.message}")
    if isinstance(error, ProviderRateLimited):
        return ResourceExhausted(
            f"provider {name!r} is rate limited upstream: {error.message}",
            violations=[QuotaViolation(f"provider:{name}", "upstream request rate")],
            retry_after=error.retry_after or 1.0,
        )
    if error.retryable:
        return Unavailable(
            f"provider {name!r} failed: {error.message}", retry_after=error.retry_after or 1.0
        )
    return Internal(f"provider {name!r} failed: {error.message}", reason="PROVIDER_FAILED")
