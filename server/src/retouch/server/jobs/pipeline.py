"""One edit, from request to settled job: admit → prepare → route → reserve → run →
store → settle.

:meth:`EditPipeline.submit` runs the first four stages in the caller's call, so a
refusal is that call's status and nothing is held for it. The job then runs in its own
task (:meth:`EditPipeline._run`: run → store → settle), bounded by its deadline and not
by the connection that started it. Each stage is a function of plain data that returns
plain data: the request, then an :class:`~retouch.server.edits.InspectedEdit` (checked
from its headers), a :class:`~retouch.server.routing.Route`, the job's record and hold,
the decoded :class:`~retouch.server.edits.PreparedEdit`, the provider's outcome, the
stored result, the final status.

Pixels are decoded only while the job holds a slot of its provider's
(:mod:`~retouch.server.scheduling`): a job that finds one free takes it before any
await and decodes in the caller's call, so corrupt pixels are refused with nothing
held; a job that waits keeps its encoded request and decodes when its turn comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.protobuf.message import Message

from ..auth import Caller
from ..clock import Clock
from ..edits import (
    EditMessage,
    EditPreparer,
    InspectedEdit,
    PreparedEdit,
    off_loop,
    operation_of,
)
from ..errors import (
    Cancelled,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    RetouchError,
    Unavailable,
)
from ..ids import new_id
from ..policy import Balance, Plan, Policy
from ..policy.upstream import UpstreamLimits
from ..routing import Route, RoutePolicy, Router
from ..scheduling import PlaceReporter, QueuePlace, Scheduler, Slot
from ..telemetry import job_started, stage
from .events import Accepted, Completed, Progressed
from .live import LiveJob
from .manager import JobManager, same_request
from .records import JobRecord, JobState
from .results import ResultWriter
from .runner import ProviderRunner
from .settle import OK, Settlement
from .store import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Admission:
    """What the stages before the run decided for a job."""

    job: JobRecord
    inspected: InspectedEdit
    """The edit as checked from its headers, holding only encoded inputs."""
    caller: Caller
    edit: PreparedEdit | None
    """The decoded edit; ``None`` for a job that waits for a slot, which decodes once
    the slot is its own."""
    slot: Slot | None
    """The free slot of its provider the job took when it was admitted, if there was one."""
    route: Route
    plan: Plan
    balance: Balance
    """The caller's balance once this job's hold was taken."""
    time_limit_s: float
    """Seconds the job may run: the caller's deadline, or the configured default."""


class EditPipeline:
    """Admits, runs and settles ImageEdit jobs."""

    def __init__(
        self,
        *,
        edits: EditPreparer,
        policy: Policy,
        router: Router,
        upstream: UpstreamLimits,
        store: JobStore,
        jobs: JobManager,
        runner: ProviderRunner,
        results: ResultWriter,
        settlement: Settlement,
        clock: Clock,
        default_deadline_s: float,
        scheduler: Scheduler | None = None,
    ) -> None:
        self._edits = edits
        self._policy = policy
        self._router = router
        self._upstream = upstream
        self._store = store
        self._jobs = jobs
        self._runner = runner
        self._results = results
        self._settlement = settlement
        self._clock = clock
        self._default_deadline_s = default_deadline_s
        self._scheduler = scheduler or Scheduler(clock)

    @property
    def scheduler(self) -> Scheduler:
        """The queues in front of the providers' capacity."""
        return self._scheduler

    async def submit(self, request: EditMessage, caller: Caller, *, time_left: float | None) -> str:
        """Start the job ``request`` asks for and return its id — or the id of the job
        an earlier call with the same request_id started, charging nothing again.

        ``time_left`` is the caller's deadline in seconds, if it set one.
        """
        request_id = request.request_id
        fingerprint = await _fingerprint(request) if request_id else ""
        async with self._jobs.claim(caller, request_id, fingerprint) as claim:
            if claim.job_id:
                return claim.job_id
            if self._jobs.closing:
                raise Unavailable("the server is shutting down; retry on another replica or later")
            # Before a token is taken or a byte decoded: nothing can run it anyway.
            self._router.refuse_if_all_down(operation_of(request), request.provider.provider)
            # Only a look at the caller's buckets: a rate-limited caller is refused
            # before decoding, and the tokens are taken once the provider is known.
            plan = await self.admit(request, caller, dry_run=True)  # admit
            inspected = await self._edits.inspect(request, caller, plan)  # prepare: headers
            # Refused here, when the provider's queue is full, before anything is held.
            route = self._scheduler.choose(await self.route(inspected, plan))  # route
            route = await self._take_tokens(caller, plan, route)
            # Taken before any await, so callers arriving together cannot all see it free.
            slot = self._scheduler.claim(route.candidates[0])
            claim.job_id = await self._admit_job(
                request, caller, plan, inspected, route, fingerprint, time_left, slot=slot
            )
            return claim.job_id

    async def _admit_job(
        self,
        request: EditMessage,
        caller: Caller,
        plan: Plan,
        inspected: InspectedEdit,
        route: Route,
        fingerprint: str,
        time_left: float | None,
        *,
        slot: Slot | None,
    ) -> str:
        """Decode (when the job has a ``slot``), reserve, record and launch the job;
        returns its id, or the id of the job its request_id already names. The slot
        goes back unless the job was launched with it."""
        launched = False
        try:
            # A job holding a slot decodes now, so corrupt pixels are refused before
            # any credit is held; a waiting job keeps only its encoded input.
            edit = None if slot is None else await self._edits.decode(inspected)  # prepare: pixels
            inspected = inspected.encoded_only()
            time_limit = self._default_deadline_s if time_left is None else time_left
            job = self._new_job(
                caller, request.request_id, fingerprint, inspected, route, time_limit
            )
            if slot is None:
                job = dataclasses.replace(job, state=JobState.QUEUED)
            balance = await self._reserve(job, caller, plan, route)  # reserve
            existing = await self._record(job)
            if existing is not None:
                same_request(existing.fingerprint, fingerprint)
                return existing.job_id
            admission = Admission(
                job=job,
                inspected=inspected,
                caller=caller,
                edit=edit,
                slot=slot,
                route=route,
                plan=plan,
                balance=balance,
                time_limit_s=time_limit,
            )
            del edit
            live = self._jobs.track(job)
            task = self._jobs.launch(live, self._run(admission, live))
            launched = True
            if slot is not None:
                # A task cancelled before its first step never runs its body.
                task.add_done_callback(lambda _: slot.release())
            return job.job_id
        finally:
            if slot is not None and not launched:
                slot.release()

    async def quote(self, request: EditMessage, caller: Caller) -> Route:
        """What :meth:`submit` would decide for ``request`` (the route, or the refusal it
        raises), without taking a token or holding credits."""
        plan = await self.admit(request, caller, dry_run=True)
        edit = await self._edits.inspect(request, caller, plan)
        route = self._scheduler.choose(await self.route(edit, plan))
        await self._policy.would_reserve(caller, plan, route.candidates[0].price)
        return route

    # -- the stages before the run ---------------------------------------------------

    async def admit(self, request: EditMessage, caller: Caller, *, dry_run: bool = False) -> Plan:
        """The admit stage: the request's fields, then the caller's plan caps and token
        buckets (only looked at in a ``dry_run``). Returns the caller's plan."""
        plan = await self._policy.plan_for(caller)
        intent = self._edits.check(request)
        with stage("policy.admit"):
            await self._policy.admit(caller, plan, intent, dry_run=dry_run)
        return plan

    async def route(self, edit: InspectedEdit, plan: Plan) -> Route:
        """The route stage: the providers that may take ``edit`` under ``plan``, best
        first; raises when none may."""
        policy = self._policy
        with stage("routing"):
            waits = await self._upstream.waits()
            return self._router.route(
                edit.route,
                edit.output_size,
                RoutePolicy(
                    exclusion=lambda manifest: policy.exclusion(plan, manifest),
                    price=lambda cost: policy.price(plan, cost, edit.output_size),
                    upstream_wait=lambda name: waits.get(name, 0.0),
                    plan=plan.name,
                ),
            )

    async def _take_tokens(self, caller: Caller, plan: Plan, route: Route) -> Route:
        """The subject's, the tenant's and the first candidate's upstream tokens, in
        one atomic acquire; returns the route whose first candidate's token was taken.

        Routing only looked at the upstream buckets, so another replica may have taken
        a provider's last token since: then nothing is taken and the next capable
        candidate is tried the same way. Raises the last refusal when none is left.
        """
        with stage("policy.tokens"):
            while True:
                first = route.candidates[0]
                bucket = self._upstream.bucket(first.name)
                try:
                    await self._policy.take_tokens(
                        caller, plan, also=() if bucket is None else (bucket,)
                    )
                    return route
                except ResourceExhausted as refusal:
                    by_provider = bucket is not None and any(
                        v.subject == bucket.key for v in refusal.violations
                    )
                    if not by_provider or len(route.candidates) == 1:
                        raise
                note = f"skipped {first.name!r}: its upstream rate limit took its last token"
                route = self._scheduler.choose(
                    dataclasses.replace(
                        route, candidates=route.candidates[1:], notes=[*route.notes, note]
                    )
                )

    async def _reserve(self, job: JobRecord, caller: Caller, plan: Plan, route: Route) -> Balance:
        """The reserve stage: one job of quota and the first candidate's price held for
        ``job``; RESOURCE_EXHAUSTED when the caller cannot afford it."""
        with stage("policy.reserve"):
            return await self._policy.reserve(job.job_id, caller, plan, route.candidates[0].price)

    def _new_job(
        self,
        caller: Caller,
        request_id: str,
        fingerprint: str,
        edit: InspectedEdit,
        route: Route,
        time_limit_s: float,
    ) -> JobRecord:
        first = route.candidates[0]
        now = self._clock.now()
        return JobRecord(
            job_id=new_id("job", self._clock),
            owner=caller.owner,
            subject=caller.subject,
            request_id=request_id,
            fingerprint=fingerprint,
            operation=edit.operation.value,
            state=JobState.RUNNING,
            provider=first.name,
            model=first.model,
            seed=edit.seed,
            created_at=now,
            updated_at=now,
            replica_id=self._jobs.replica_id,
            lease_until=now + self._jobs.lease_s,
            deadline_at=now + time_limit_s,
        )

    async def _record(self, job: JobRecord) -> JobRecord | None:
        """Create the job; when its request_id was taken meanwhile (by a call on another
        replica), release this hold and return the job that took it."""
        try:
            stored, created = await self._store.create_or_get(job)
        except BaseException:
            await self._policy.ledger.release(job.job_id, now=self._clock.now(), note="not created")
            raise
        if created:
            return None
        await self._policy.ledger.release(job.job_id, now=self._clock.now(), note="duplicate")
        return stored

    # -- the job's own task: run → store → settle --------------------------------------

    async def _run(self, admission: Admission, live: LiveJob) -> None:
        """Run the job within its time limit and settle it, whatever happens."""
        job, route, plan = admission.job, admission.route, admission.plan
        job_started(job, admission.inspected.route.width, admission.inspected.route.height)
        edit_seed = admission.inspected.seed
        deadline = self._clock.monotonic() + admission.time_limit_s
        try:
            async with asyncio.timeout(admission.time_limit_s):
                live.publish(_accepted(admission))
                # Decoding, the provider call and encoding all hold the provider's slot,
                # so pixel buffers are bounded by capacity, not by the callers.
                async with self._slot(admission, live):
                    if job.state is JobState.QUEUED:
                        job = dataclasses.replace(
                            job, state=JobState.RUNNING, lease_until=live.lease_until
                        )
                        await self._store.update_job(job)
                    edit = admission.edit or await self._edits.decode(admission.inspected)
                    job, outcome = await self._runner.run(job, edit, route, live, deadline)  # run
                    with stage("storage"):  # store
                        result = await self._results.write(
                            job, edit, outcome, live, retention_days=plan.retention_days
                        )
                    del edit
                price = outcome.charge
                live.publish(Completed(result, edit_seed, price, outcome.provider_ms))
                job = dataclasses.replace(job, result_id=result.result_id, cost_credits=price)
        except asyncio.CancelledError:
            await self._settle(live, job, live.cancel_reason or Cancelled("the job was cancelled"))
            raise
        except TimeoutError:
            await self._settle(
                live, job, DeadlineExceeded("the job's deadline passed before it finished")
            )
        except RetouchError as error:
            await self._settle(live, job, error)
        except Exception:
            log.exception("job %s failed unexpectedly", job.job_id)
            await self._settle(
                live,
                job,
                Internal(
                    "the job failed because of a server error; it has been logged",
                    reason="JOB_FAILED",
                ),
            )
        else:
            await self._settle(live, job, None)

    @contextlib.asynccontextmanager
    async def _slot(self, admission: Admission, live: LiveJob) -> AsyncIterator[None]:
        """Hold the job's slot of its provider: the one it took when it was admitted,
        or one it waits for while its followers hear its place in the queue."""
        caller = admission.caller
        slot = functools.partial(
            self._scheduler.slot,
            admission.route.candidates[0],
            tenant=caller.tenant,
            subject=caller.subject,
            weight=admission.plan.queue_weight,
        )
        if admission.slot is not None:
            # At the head of the queue and starting now: every stream hears its place.
            live.publish(Progressed(0.0, "queued", QueuePlace(0, self._clock.now())))
            async with slot(listener=_ignore_place, held=admission.slot):
                yield
            return
        reporter = PlaceReporter(lambda place: live.publish(Progressed(0.0, "queued", place)))
        telling = asyncio.create_task(reporter.run(), name=f"queue place {admission.job.job_id}")
        async with contextlib.AsyncExitStack() as held:
            try:
                await held.enter_async_context(slot(listener=reporter))
            finally:
                reporter.stop()
                await telling
            yield

    async def _settle(self, live: LiveJob, job: JobRecord, error: RetouchError | None) -> None:
        """The settle stage: the job's end recorded once, then charged (once its result
        is durable) or refunded."""
        status = OK if error is None else error.to_status_proto()
        try:
            # Every event is in the store before the job reads as ended anywhere: those
            # not yet written, a failed write's included, go in the write of its end.
            await live.writes_done()
            status = await self._settlement.settle(job, error, live)
        finally:
            live.finish(status)


def _ignore_place(place: QueuePlace) -> None:
    """A job that holds its slot already is never told a place."""


def _accepted(admission: Admission) -> Accepted:
    plan, balance = admission.plan, admission.balance
    return Accepted(
        route=admission.route,
        seed=admission.inspected.seed,
        input_size=(admission.inspected.route.width, admission.inspected.route.height),
        quota_left=-1
        if plan.monthly_jobs is None
        else max(0, plan.monthly_jobs - balance.jobs_used),
        credits_left=balance.available if plan.credits else -1,
    )


async def _fingerprint(request: Message) -> str:
    # Deterministic serialization makes equal requests hash equally, whatever order
    # the client set fields in.
    payload = request.SerializeToString(deterministic=True)
    # Hashing runs about 8x faster per byte than decoding, which off_loop's size is
    # calibrated for; a 1 MiB request still costs ~2 ms, too much for the event loop.
    return await off_loop(lambda: hashlib.sha256(payload).hexdigest(), size=len(payload) // 8)
