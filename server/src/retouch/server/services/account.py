"""The Account service: usage, quotes, and the admin calls that set plans and grant credits."""

from __future__ import annotations

from typing import Any

from grpc import aio

from retouch.v1 import account_pb2 as pb
from retouch.v1 import account_pb2_grpc

from ..auth import Caller, current_caller, parse_subject
from ..convert import routing_decision, timestamp
from ..edits import EditMessage
from ..errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    RetouchError,
    Unavailable,
    echo,
    status_code_name,
)
from ..jobs.pipeline import EditPipeline
from ..policy import Policy
from .rpc import rpc

Context = aio.ServicerContext[Any, Any]

_REFUSALS = (PermissionDenied, ResourceExhausted, Unavailable)
MAX_GRANT_CREDITS = 2**53
"""The most one grant may add: far past any real grant, and small enough that balances
stay exact in every client (JavaScript numbers) and far from 64-bit overflow."""


class AccountService(account_pb2_grpc.AccountServicer):
    """Implements ``retouch.v1.Account``."""

    def __init__(
        self,
        *,
        policy: Policy,
        pipeline: EditPipeline,
    ) -> None:
        self._policy = policy
        self._pipeline = pipeline

    @rpc
    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.Usage:
        caller = _acting_for(current_caller(), request.subject, admin_needed=bool(request.subject))
        policy = self._policy
        plan = await policy.plan_for(caller)
        balance = await policy.ledger.balance(caller.owner, policy.period())
        limit = plan.monthly_jobs
        buckets = [
            pb.BucketState(
                name=snapshot.key.split(":", 1)[0],
                capacity=snapshot.capacity,
                tokens=snapshot.tokens,
                refill_per_second=snapshot.rate,
            )
            for snapshot in await policy.buckets(caller, plan)
        ]
        return pb.Usage(
            subject=caller.subject,
            plan=plan.name,
            quota_limit=-1 if limit is None else limit,
            quota_used=balance.jobs_used,
            quota_left=-1 if limit is None else max(0, limit - balance.jobs_used),
            quota_resets_at=timestamp(policy.period_end()),
            credits_balance=balance.available,
            credits_reserved=balance.held,
            buckets=buckets,
        )

    @rpc
    async def Quote(self, request: pb.QuoteRequest, context: Context) -> pb.QuoteResponse:
        kind = request.WhichOneof("edit")
        try:
            edit: EditMessage
            if kind == "inpaint":
                edit = request.inpaint
            elif kind == "outpaint":
                edit = request.outpaint
            elif kind == "enhance":
                edit = request.enhance
            else:
                raise InvalidArgument("edit", "set one of inpaint, outpaint or enhance")
            route = await self._pipeline.quote(edit, current_caller())
            first = route.candidates[0]
        except _REFUSALS as refusal:
            return pb.QuoteResponse(allowed=False, refusal=_refusal(refusal))
        return pb.QuoteResponse(
            allowed=True,
            provider=first.name,
            model=first.model,
            estimated_cost_credits=first.price,
            routing=routing_decision(route),
        )

    @rpc
    async def SetPlan(self, request: pb.SetPlanRequest, context: Context) -> pb.SetPlanResponse:
        caller = _acting_for(current_caller(), request.subject, admin_needed=True)
        if self._policy.plan_named(request.plan) is None:
            raise InvalidArgument(
                "plan",
                f"unknown plan {echo(request.plan)}; configured plans: "
                f"{', '.join(self._policy.plan_names())}",
            )
        await self._policy.ledger.set_plan(caller.owner, request.plan, self._policy.now())
        return pb.SetPlanResponse(subject=caller.subject, plan=request.plan)

    @rpc
    async def GrantCredits(
        self, request: pb.GrantCreditsRequest, context: Context
    ) -> pb.GrantCreditsResponse:
        caller = _acting_for(current_caller(), request.subject, admin_needed=True)
        if not 0 < request.credits <= MAX_GRANT_CREDITS:
            raise InvalidArgument(
                "credits", f"credits to grant must be 1..{MAX_GRANT_CREDITS} (2^53)"
            )
        balance = await self._policy.ledger.grant(
            caller.owner,
            request.credits,
            request_id=request.request_id,
            note=request.note[:500],
            now=self._policy.now(),
        )
        return pb.GrantCreditsResponse(subject=caller.subject, credits_balance=balance)


def _acting_for(caller: Caller, subject: str, *, admin_needed: bool) -> Caller:
    if admin_needed and not caller.admin:
        raise PermissionDenied("this call needs an admin key of the tenant", reason="ADMIN_ONLY")
    if not subject:
        if admin_needed:
            raise InvalidArgument("subject", "subject is required, for example 'user:42'")
        return caller
    try:
        parsed = parse_subject(subject)
    except InvalidArgument:
        raise InvalidArgument(
            "subject", f"subject {echo(subject)} is not valid: use 'user:<id>' or 'guest:<id>'"
        ) from None
    return Caller(tenant=caller.tenant, subject=parsed, admin=caller.admin)


def _refusal(error: RetouchError) -> pb.Refusal:
    status = error.to_status_proto()
    return pb.Refusal(
        code=status_code_name(status.code),
        reason=getattr(error, "reason", "") or status_code_name(status.code),
        message=error.message,
        retry_after_seconds=getattr(error, "retry_after", None) or 0.0,
    )
