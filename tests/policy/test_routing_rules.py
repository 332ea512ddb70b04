"""Routing rules by task complexity, over real gRPC: the rule that chose is in Accepted."""

from __future__ import annotations

from typing import Any

from retouch.sdk import CostModel, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.policy import Plan
from retouch.server.routing_rules import parse_rules
from retouch.v1 import common_pb2
from tests.e2e.hosted_fakes import ScriptedHosted
from tests.helpers import png, square_mask
from tests.policy.test_money import inpaint, outcome

PRO = Plan("pro", paid_providers=True, rate_per_s=1000, burst=1000)
BASIC = Plan("basic", paid_providers=True, allowed_providers=("local", "budget"))
FREE = Plan("free")
RULES = parse_rules(
    [
        {
            "name": "small-removals-stay-local",
            "when": {"mask_fraction_max": 0.3, "prompt": False},
            "choose": {"kind": "local", "prefer": "cost"},
        },
        {
            "name": "everything-else-hosted",
            "choose": {"kind": "hosted", "prefer": "quality"},
        },
    ]
)
HALF_MASK = png(square_mask((64, 64), (0, 0, 64, 32)))


def providers() -> list[Any]:
    return [
        FakeProvider(
            "local", [Operation.INPAINT], cost=CostModel(credits_per_job=0), quality_rank=1
        ),
        ScriptedHosted("budget", credits_per_job=2, quality_rank=3),
        ScriptedHosted("premium", credits_per_job=5, quality_rank=9),
    ]


def prompted(text: str = "a red balloon") -> Any:
    return inpaint(params=common_pb2.GenerationParams(prompt=text))


async def routing(h: Any, request: Any, subject: str = "user:alice") -> Any:
    events = await outcome(h.edit, request, subject=subject)
    assert isinstance(events, list), events
    return events[0].accepted.routing


async def test_a_small_mask_without_a_prompt_goes_to_the_cheapest_local_provider(
    harness: Any,
) -> None:
    async with harness(
        plans=[PRO], providers=providers(), environment="staging", routing_rules=RULES
    ) as h:
        decision = await routing(h, inpaint())
        assert decision.rule == "small-removals-stay-local"
        assert list(decision.candidates) == ["local", "budget", "premium"]
        assert decision.prefer == common_pb2.ROUTE_PREFERENCE_COST
        assert decision.notes[0].startswith("rule 'small-removals-stay-local' chose local")


async def test_a_prompt_or_a_large_mask_goes_to_the_best_hosted_provider(harness: Any) -> None:
    async with harness(
        plans=[PRO], providers=providers(), environment="staging", routing_rules=RULES
    ) as h:
        with_prompt = await routing(h, prompted())
        assert with_prompt.rule == "everything-else-hosted"
        assert list(with_prompt.candidates) == ["premium", "budget", "local"]
        assert with_prompt.prefer == common_pb2.ROUTE_PREFERENCE_QUALITY
        blank_prompt = await routing(h, prompted("   "))
        assert blank_prompt.rule == "small-removals-stay-local"
        large_mask = inpaint()
        large_mask.mask.data = HALF_MASK
        large = await routing(h, large_mask)
        assert (large.rule, large.chosen) == ("everything-else-hosted", "premium")


async def test_the_best_hosted_provider_is_the_best_the_plan_allows(harness: Any) -> None:
    async with harness(
        plans=[BASIC], providers=providers(), environment="staging", routing_rules=RULES
    ) as h:
        decision = await routing(h, prompted())
        assert (decision.rule, decision.chosen) == ("everything-else-hosted", "budget")
        assert ("premium", "plan 'basic' does not include this provider") in [
            (x.provider, x.reason) for x in decision.excluded
        ]


async def test_a_rule_with_no_eligible_provider_falls_through_to_default_routing(
    harness: Any,
) -> None:
    async with harness(
        plans=[FREE], providers=providers(), environment="staging", routing_rules=RULES
    ) as h:
        decision = await routing(h, prompted())
        assert decision.rule == ""
        assert decision.chosen == "local"
        assert decision.notes == [
            "rule 'everything-else-hosted' matched but no eligible provider is one of its "
            "hosted providers by quality; default routing chose"
        ]


async def test_rules_match_on_plan_and_operation_and_keep_a_named_order(harness: Any) -> None:
    rules = parse_rules(
        [
            {
                "name": "pro-inpaints",
                "when": {"plans": ["pro"], "operations": ["inpaint"]},
                "choose": {"providers": ["budget", "premium"]},
            }
        ]
    )
    async with harness(
        plans=[PRO, FREE], providers=providers(), environment="staging", routing_rules=rules
    ) as h:
        decision = await routing(h, inpaint())
        assert decision.rule == "pro-inpaints"
        assert list(decision.candidates) == ["budget", "premium", "local"]


async def test_a_named_provider_bypasses_the_rules(harness: Any) -> None:
    async with harness(
        plans=[PRO], providers=providers(), environment="staging", routing_rules=RULES
    ) as h:
        decision = await routing(h, inpaint(provider=common_pb2.ProviderChoice(provider="premium")))
        assert (decision.rule, decision.chosen) == ("", "premium")
