"""The router: capable ∧ allowed ∧ healthy ∧ affordable, by preference, with fallbacks."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc import aio

from retouch.sdk import (
    CostModel,
    EnhanceKind,
    Health,
    HealthReport,
    Operation,
    ProviderRateLimited,
    ProviderUnavailable,
)
from retouch.sdk.testing import FakeProvider
from retouch.server.clock import ManualClock
from retouch.server.policy import Plan
from retouch.v1 import account_pb2, common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata
from tests.policy.test_money import IMAGE, SUBJECT, grant, inpaint, outcome


def providers() -> list[FakeProvider]:
    return [
        FakeProvider(
            "cheap", [Operation.INPAINT], cost=CostModel(credits_per_job=1), quality_rank=1
        ),
        FakeProvider(
            "fine", [Operation.INPAINT], cost=CostModel(credits_per_job=3), quality_rank=5
        ),
        FakeProvider("upscaler", [Operation.ENHANCE], cost=CostModel(credits_per_job=0)),
    ]


def prefer(value: common_pb2.RoutePreference.ValueType, **fields: Any) -> Any:
    return inpaint(provider=common_pb2.ProviderChoice(prefer=value, **fields))


async def test_the_decision_follows_the_preference_and_says_why(harness: Any) -> None:
    async with harness(plans=[Plan("p", credits=True)], providers=providers()) as h:
        await grant(h.account, 100)
        by_cost = await outcome(h.edit, prefer(common_pb2.ROUTE_PREFERENCE_COST))
        decision = by_cost[0].accepted.routing
        assert (decision.chosen, list(decision.candidates)) == ("cheap", ["cheap", "fine"])
        assert [(x.provider, x.reason) for x in decision.excluded] == [
            ("upscaler", "provider 'upscaler' cannot inpaint")
        ]
        by_quality = await outcome(h.edit, prefer(common_pb2.ROUTE_PREFERENCE_QUALITY))
        assert by_quality[0].accepted.routing.chosen == "fine"
        assert by_quality[-1].completed.cost_credits == 3
        within = await outcome(
            h.edit, prefer(common_pb2.ROUTE_PREFERENCE_QUALITY, max_cost_credits=2)
        )
        assert within[0].accepted.routing.chosen == "cheap"


async def test_a_retryable_failure_falls_back_and_charges_once(harness: Any) -> None:
    flaky = FakeProvider(
        "flaky",
        [Operation.INPAINT],
        cost=CostModel(credits_per_job=1),
        fail_with=ProviderUnavailable("upstream 503"),
        fail_after=1,
    )
    steady = FakeProvider("steady", [Operation.INPAINT], cost=CostModel(credits_per_job=2))
    async with harness(plans=[Plan("p", credits=True)], providers=[flaky, steady]) as h:
        await grant(h.account, 10)
        events = await outcome(h.edit, inpaint())
        assert isinstance(events, list)
        assert events[0].accepted.routing.chosen == "flaky"
        stages = [e.progress.stage for e in events if e.HasField("progress")]
        assert "retrying on steady" in stages
        assert events[-1].completed.cost_credits == 2
        assert (flaky.calls, steady.calls) == (1, 1)
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved) == (8, 0)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")


async def test_unhealthy_providers_are_skipped_and_none_left_is_unavailable(harness: Any) -> None:
    down = FakeProvider("down", [Operation.INPAINT])
    async with harness(plans=[Plan("p")], providers=[down]) as h:
        h.server.registry.providers["down"].health = HealthReport(Health.UNAVAILABLE, "maintenance")
        error = await outcome(h.edit, inpaint())
        assert isinstance(error, aio.AioRpcError)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert down.calls == 0


async def test_enhance_jobs_go_only_to_providers_offering_that_enhancement(
    harness: Any,
) -> None:
    upscaler = FakeProvider(
        "upscaler", [Operation.ENHANCE], enhance_kinds=[EnhanceKind.UPSCALE], quality_rank=9
    )
    allround = FakeProvider("allround", [Operation.ENHANCE], quality_rank=1)
    async with harness(plans=[Plan("p")], providers=[upscaler, allround]) as h:
        request = pb.EnhanceRequest(
            image=common_pb2.ImageInput(data=IMAGE),
            kind=pb.ENHANCE_KIND_DENOISE,
            provider=common_pb2.ProviderChoice(prefer=common_pb2.ROUTE_PREFERENCE_QUALITY),
        )
        events = [e async for e in h.edit.Enhance(request, metadata=metadata(subject=SUBJECT))]
        decision = events[0].accepted.routing
        assert decision.chosen == "allround"
        assert [(x.provider, x.reason) for x in decision.excluded] == [
            ("upscaler", "provider 'upscaler' does not denoise")
        ]
        assert events[-1].HasField("completed")
        assert upscaler.calls == 0


async def test_a_provider_rate_limited_upstream_is_throttled(harness: Any) -> None:
    clock = ManualClock()
    limited = FakeProvider(
        "limited",
        [Operation.INPAINT],
        requests_per_minute=60,
        fail_with=ProviderRateLimited("429 too many requests", retry_after=2.0),
    )
    async with harness(
        plans=[Plan("p", rate_per_s=100, burst=100)], providers=[limited], clock=clock
    ) as h:
        first = await outcome(h.edit, inpaint())
        assert isinstance(first, aio.AioRpcError)
        assert first.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        second = await outcome(h.edit, inpaint())
        assert isinstance(second, aio.AioRpcError)
        assert second.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert limited.calls == 1  # the second was refused by the bucket, not sent upstream
        snapshot = await h.server.upstream.snapshot("limited")
        assert snapshot is not None
        assert snapshot.rate == 0.5  # halved from 1/s
        clock.advance(60)
        recovered = await h.server.upstream.snapshot("limited")
        assert recovered is not None
        assert recovered.rate > 0.5


async def test_quote_charges_nothing_and_names_the_limit(harness: Any) -> None:
    fake = FakeProvider("fake", [Operation.INPAINT], cost=CostModel(credits_per_job=4))
    async with harness(plans=[Plan("p", credits=True, monthly_jobs=5)], providers=[fake]) as h:
        quote = await h.account.Quote(
            account_pb2.QuoteRequest(inpaint=inpaint()), metadata=metadata(subject=SUBJECT)
        )
        assert not quote.allowed
        assert quote.refusal.code == "RESOURCE_EXHAUSTED"
        assert quote.refusal.reason == "INSUFFICIENT_CREDITS"
        await grant(h.account, 4)
        quote = await h.account.Quote(
            account_pb2.QuoteRequest(inpaint=inpaint()), metadata=metadata(subject=SUBJECT)
        )
        assert quote.allowed
        assert (quote.provider, quote.estimated_cost_credits) == ("fake", 4)
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.quota_used) == (4, 0)
        assert usage.plan == "p"
        assert usage.quota_limit == 5
        assert {b.name for b in usage.buckets} == {"subject", "tenant"}
        assert fake.calls == 0


async def test_set_plan_needs_a_known_plan_and_an_admin(harness: Any) -> None:
    from tests.conftest import OTHER_KEY

    async with harness(plans=[Plan("a"), Plan("b")], providers=[FakeProvider()]) as h:
        answer = await h.account.SetPlan(
            account_pb2.SetPlanRequest(subject=SUBJECT, plan="b"), metadata=metadata()
        )
        assert answer.plan == "b"
        assert (await h.usage(SUBJECT)).plan == "b"
        refusals = [
            (account_pb2.SetPlanRequest(subject=SUBJECT, plan="zzz"), None, "INVALID_ARGUMENT"),
            (account_pb2.SetPlanRequest(subject="bob", plan="a"), None, "INVALID_ARGUMENT"),
            (account_pb2.SetPlanRequest(subject=SUBJECT, plan="a"), OTHER_KEY, "PERMISSION_DENIED"),
        ]
        for request, key, code in refusals:
            with pytest.raises(aio.AioRpcError) as refused:
                await h.account.SetPlan(request, metadata=metadata(key=key) if key else metadata())
            assert refused.value.code().name == code
