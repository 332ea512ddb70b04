"""The policy decision for one edit: plan caps, token buckets, price, reservation.

Order, cheapest refusal first: plan caps on the request's parameters → the subject's
and the tenant's token buckets → (the input is decoded) → plan caps on pixels → the
router's pick → a quota and credit reservation. Nothing is charged until a job ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from retouch.sdk import Manifest

from ..clock import Clock
from ..errors import PermissionDenied, QuotaViolation, ResourceExhausted
from .ledger import Balance, Ledger, refuse_unless_affordable
from .plans import Plan, PlanBook
from .ratelimit import Bucket, BucketSnapshot, RateLimiter

if TYPE_CHECKING:
    from ..auth import Caller
    from ..config import TenantConfig

LOCAL_ENVIRONMENTS = ("local", "test")


@dataclass(frozen=True, slots=True)
class EditIntent:
    """What an edit asks for, known before its inputs are decoded."""

    output_format: str
    provider: str = ""
    steps: int | None = None
    strength: float | None = None


class Policy:
    """Decides whether a caller may run an edit, and holds and settles its price."""

    def __init__(
        self,
        *,
        plans: PlanBook,
        tenants: Mapping[str, TenantConfig],
        ledger: Ledger,
        limiter: RateLimiter,
        clock: Clock,
        environment: str,
    ) -> None:
        self._plans = plans
        self._tenants = tenants
        self.ledger = ledger
        self._limiter = limiter
        self._clock = clock
        self.environment = environment

    async def plan_for(self, caller: Caller, subject: str | None = None) -> Plan:
        """The plan of ``subject`` (default: the caller's), or its tenant's default."""
        owner = f"{caller.tenant}/{subject or caller.subject}"
        name = await self.ledger.plan_of(owner) or self._tenants[caller.tenant].default_plan
        plan = self._plans.get(name)
        if plan is None:  # a plan removed from the config: fall back to the default
            plan = self._plans.plans[self._tenants[caller.tenant].default_plan]
        return plan

    async def admit(
        self,
        caller: Caller,
        plan: Plan,
        intent: EditIntent,
        *,
        dry_run: bool = False,
        also: Sequence[Bucket] = (),
    ) -> None:
        """Plan caps on parameters, then one token from each of the caller's buckets
        and from ``also`` (a provider's upstream bucket, when it is known), all at
        once or none (only looked at, not taken, in a ``dry_run``)."""
        if intent.output_format not in plan.output_formats:
            raise _denied(
                plan,
                "PLAN_OUTPUT_FORMAT",
                f"output format {intent.output_format}",
                ", ".join(plan.output_formats),
            )
        if intent.steps is not None and intent.steps > plan.max_steps:
            raise _denied(plan, "PLAN_MAX_STEPS", f"{intent.steps} steps", str(plan.max_steps))
        if intent.strength is not None and intent.strength > plan.max_strength:
            raise _denied(
                plan, "PLAN_MAX_STRENGTH", f"strength {intent.strength:g}", f"{plan.max_strength:g}"
            )
        if intent.provider and not plan_allows(plan, intent.provider):
            raise _denied(
                plan,
                "PLAN_PROVIDER_NOT_ALLOWED",
                f"provider {intent.provider!r}",
                ", ".join(plan.allowed_providers or ()),
            )
        await self.take_tokens(caller, plan, also=also, dry_run=dry_run)

    async def take_tokens(
        self,
        caller: Caller,
        plan: Plan,
        *,
        also: Sequence[Bucket] = (),
        dry_run: bool = False,
    ) -> None:
        """One token from each of the caller's buckets and from ``also``, in one atomic
        acquire: all of them or none, so a refusal by any bucket spends no other's
        token. Raises RESOURCE_EXHAUSTED (QuotaFailure naming the refusing bucket's
        key, RetryInfo) when one is short."""
        buckets = [*self._caller_buckets(caller, plan), *also]
        decision = await self._limiter.acquire(buckets, dry_run=dry_run)
        if not decision.allowed:
            refused = next(b for b in buckets if b.key == decision.limiting)
            name = refused.key.split(":", 1)[0]
            raise ResourceExhausted(
                f"too many requests for this {name}: retry in {decision.retry_after:.2f} s",
                violations=[
                    QuotaViolation(
                        refused.key, f"{refused.rate:g} requests/s, burst {refused.capacity:g}"
                    )
                ],
                retry_after=decision.retry_after,
                reason="RATE_LIMITED",
            )

    def _caller_buckets(self, caller: Caller, plan: Plan) -> tuple[Bucket, Bucket]:
        tenant = self._tenants[caller.tenant]
        return (
            Bucket(f"subject:{caller.owner}", plan.rate_per_s, plan.burst),
            Bucket(f"tenant:{caller.tenant}", tenant.rate_per_s, tenant.burst),
        )

    def plan_named(self, name: str) -> Plan | None:
        return self._plans.get(name)

    def plan_names(self) -> list[str]:
        return sorted(self._plans.plans)

    def now(self) -> float:
        return self._clock.now()

    def exclusion(self, plan: Plan, manifest: Manifest) -> str | None:
        """Why ``plan`` in this environment may not use a provider, or None."""
        paid = manifest.remote and (
            manifest.cost.credits_per_job > 0 or manifest.cost.credits_per_megapixel > 0
        )
        if paid and self.environment in LOCAL_ENVIRONMENTS:
            return f"paid remote providers are disabled in the {self.environment} environment"
        if paid and not plan.paid_providers:
            return f"plan {plan.name!r} does not include paid remote providers"
        if not plan_allows(plan, manifest.name):
            return f"plan {plan.name!r} does not include this provider"
        return None

    def price(self, plan: Plan, provider_cost: int, output_size: tuple[int, int]) -> int:
        """Credits a job costs the caller: the provider's price plus the plan's surcharge."""
        if not plan.credits:
            return 0
        return provider_cost + plan.surcharge(*output_size)

    async def would_reserve(self, caller: Caller, plan: Plan, credits: int) -> None:
        """Raise what :meth:`reserve` would raise, without holding anything."""
        refuse_unless_affordable(
            caller.owner,
            await self.ledger.balance(caller.owner, self.period()),
            credits=credits,
            quota=plan.monthly_jobs,
            charge_credits=plan.credits,
        )

    async def reserve(self, job_id: str, caller: Caller, plan: Plan, credits: int) -> Balance:
        return await self.ledger.reserve(
            job_id,
            caller.owner,
            credits=credits,
            period=self.period(),
            quota=plan.monthly_jobs,
            charge_credits=plan.credits,
            now=self._clock.now(),
        )

    async def buckets(self, caller: Caller, plan: Plan) -> list[BucketSnapshot]:
        return [await self._limiter.peek(b) for b in self._caller_buckets(caller, plan)]

    def period(self) -> str:
        """The current quota period: the calendar month in UTC, as ``YYYY-MM``."""
        return dt.datetime.fromtimestamp(self._clock.now(), dt.UTC).strftime("%Y-%m")

    def period_end(self) -> float:
        now = dt.datetime.fromtimestamp(self._clock.now(), dt.UTC)
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        return dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp()


def check_pixels(plan: Plan, width: int, height: int) -> None:
    """Refuse an input larger than the plan allows (PERMISSION_DENIED)."""
    if width * height > plan.max_pixels:
        raise _denied(
            plan,
            "PLAN_MAX_PIXELS",
            f"a {width}x{height} image ({width * height} pixels)",
            str(plan.max_pixels),
        )


def plan_allows(plan: Plan, provider: str) -> bool:
    return plan.allowed_providers is None or provider in plan.allowed_providers


def _denied(plan: Plan, reason: str, asked: str, limit: str) -> PermissionDenied:
    return PermissionDenied(
        f"plan {plan.name!r} does not allow {asked}; its limit is {limit}",
        reason=reason,
        metadata={"plan": plan.name, "limit": limit},
    )
