"""Fake retouch services for the client's tests: real ``grpc.aio`` servers on port 0 whose
handlers record what they receive and answer from a script."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from grpc import aio

from retouch.sdk.testing import FakeProvider
from retouch.v1 import account_pb2, common_pb2
from retouch.v1 import image_edit_pb2 as pb

Context = aio.ServicerContext[Any, Any]


@contextlib.asynccontextmanager
async def serving(
    service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
) -> AsyncIterator[str]:
    """A server offering ``handlers`` for ``service`` on a free port; yields its address."""
    server = aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


class Sleeps:
    """An injected ``sleep`` that only records how long it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def job_events(job_id: str = "job_1", result_id: str = "res_1") -> list[pb.JobEvent]:
    """A short successful job: Accepted, two Progress, Completed."""
    return [
        pb.JobEvent(
            job_id=job_id,
            seq=1,
            accepted=pb.Accepted(provider="fake", model="m", quota_left=-1, credits_left=7),
        ),
        pb.JobEvent(job_id=job_id, seq=2, progress=pb.Progress(fraction=0.5, stage="work")),
        pb.JobEvent(job_id=job_id, seq=3, progress=pb.Progress(fraction=0.9, stage="encode")),
        pb.JobEvent(
            job_id=job_id,
            seq=4,
            completed=pb.Completed(
                result_id=result_id,
                image=common_pb2.ImageInfo(
                    width=2, height=1, format=common_pb2.IMAGE_FORMAT_PNG, content_type="image/png"
                ),
                seed=9,
                cost_credits=1,
            ),
        ),
    ]


@dataclass
class Step:
    """What one Inpaint call does: send ``events``, then end with ``status`` if given."""

    events: Sequence[pb.JobEvent] = ()
    status: grpc.Status | None = None


@dataclass
class ScriptedEdits:
    """An ImageEdit whose Inpaint calls follow ``steps`` in order (the last repeats)."""

    steps: list[Step]
    requests: list[pb.InpaintRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)

    async def inpaint(
        self, request: pb.InpaintRequest, context: Context
    ) -> AsyncIterator[pb.JobEvent]:
        self.requests.append(request)
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        for event in step.events:
            yield event
        if step.status is not None:
            await context.abort_with_status(step.status)

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        handler = grpc.unary_stream_rpc_method_handler(
            self.inpaint,
            request_deserializer=pb.InpaintRequest.FromString,
            response_serializer=pb.JobEvent.SerializeToString,
        )
        async with serving("retouch.v1.ImageEdit", {"Inpaint": handler}) as target:
            yield target


@dataclass
class FakeAccount:
    """An Account service that records requests and metadata; ``fail`` holds statuses
    to end the next calls with, one each, before answering normally."""

    fail: list[grpc.Status] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)

    async def _record(self, request: Any, context: Context) -> None:
        self.requests.append(request)
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        if self.fail:
            await context.abort_with_status(self.fail.pop(0))

    async def get_usage(
        self, request: account_pb2.GetUsageRequest, context: Context
    ) -> account_pb2.Usage:
        await self._record(request, context)
        return account_pb2.Usage(
            subject=request.subject or "user:42",
            plan="free",
            quota_limit=100,
            quota_used=3,
            quota_left=97,
            quota_resets_at=timestamp_pb2.Timestamp(seconds=1_800_000_000),
            credits_balance=50,
            credits_reserved=2,
            buckets=[
                account_pb2.BucketState(name="subject", capacity=5, tokens=4.5, refill_per_second=1)
            ],
        )

    async def set_plan(
        self, request: account_pb2.SetPlanRequest, context: Context
    ) -> account_pb2.SetPlanResponse:
        await self._record(request, context)
        return account_pb2.SetPlanResponse(subject=request.subject, plan=request.plan)

    async def grant_credits(
        self, request: account_pb2.GrantCreditsRequest, context: Context
    ) -> account_pb2.GrantCreditsResponse:
        await self._record(request, context)
        return account_pb2.GrantCreditsResponse(
            subject=request.subject, credits_balance=100 + request.credits
        )

    async def quote(
        self, request: account_pb2.QuoteRequest, context: Context
    ) -> account_pb2.QuoteResponse:
        await self._record(request, context)
        return account_pb2.QuoteResponse(
            allowed=False,
            provider="fake",
            model="m",
            estimated_cost_credits=4,
            routing=common_pb2.RoutingDecision(
                chosen="fake",
                candidates=["fake", "other"],
                excluded=[common_pb2.ExcludedProvider(provider="pricey", reason="costs 8 credits")],
                prefer=common_pb2.ROUTE_PREFERENCE_COST,
            ),
            refusal=account_pb2.Refusal(
                code="RESOURCE_EXHAUSTED",
                reason="CREDITS_EXHAUSTED",
                message="not enough credits",
                retry_after_seconds=0,
            ),
        )

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        def unary(
            method: Callable[..., Any], request: Any, response: Any
        ) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        handlers = {
            "GetUsage": unary(self.get_usage, account_pb2.GetUsageRequest, account_pb2.Usage),
            "SetPlan": unary(
                self.set_plan, account_pb2.SetPlanRequest, account_pb2.SetPlanResponse
            ),
            "GrantCredits": unary(
                self.grant_credits,
                account_pb2.GrantCreditsRequest,
                account_pb2.GrantCreditsResponse,
            ),
            "Quote": unary(self.quote, account_pb2.QuoteRequest, account_pb2.QuoteResponse),
        }
        async with serving("retouch.v1.Account", handlers) as target:
            yield target


@dataclass
class Held:
    """A server whose only provider holds every job running after its progress events,
    until ``release`` is set: a test can cancel a running job without racing a clock."""

    target: str
    provider: FakeProvider
    release: asyncio.Event
