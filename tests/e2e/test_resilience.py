"""Hosted providers behind the server in ``staging``: fallback with one charge, circuit
breakers that refuse before anything is spent, and a probe that closes them again."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
from google.rpc import error_details_pb2
from grpc import aio

from retouch.sdk import (
    CostModel,
    Operation,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from retouch.sdk.testing import FakeProvider
from retouch.server.breaker import BreakerSettings
from retouch.server.clock import ManualClock
from retouch.server.policy import Plan
from retouch.v1 import common_pb2, providers_pb2
from tests.e2e.hosted_fakes import ScriptedHosted
from tests.helpers import decode_png, metadata, rpc_details
from tests.policy.test_money import IMAGE, MASK, SUBJECT, grant, inpaint, outcome

PAID = Plan("paid", credits=True, paid_providers=True, rate_per_s=1000, burst=1000)
COOL_DOWN_S = 20.0
TRIP_AFTER_ONE = BreakerSettings(failures=1, window_s=30.0, cooldown_s=COOL_DOWN_S)


def tripping(harness: Any, *providers: Any, clock: Any = None, plan: Plan = PAID) -> Any:
    """A staging server whose providers' breakers open at their first failure."""
    return harness(
        plans=[plan],
        providers=list(providers),
        environment="staging",
        clock=clock,
        circuit_breakers={p.manifest.name: TRIP_AFTER_ONE for p in providers},
    )


def inline() -> Any:
    return inpaint(output=common_pb2.OutputOptions(inline=True))


def retry_delay(error: aio.AioRpcError) -> float:
    infos = [d for d in rpc_details(error) if isinstance(d, error_details_pb2.RetryInfo)]
    assert len(infos) == 1
    delay = infos[0].retry_delay
    return float(delay.seconds + delay.nanos / 1e9)


async def breakers(h: Any) -> dict[str, Any]:
    listed = await h.providers.ListProviders(
        providers_pb2.ListProvidersRequest(), metadata=metadata()
    )
    return {p.name: p.circuit_breaker for p in listed.providers}


def assert_unmasked_pixels_are_the_inputs(result_png: bytes) -> None:
    result, original, mask = decode_png(result_png), decode_png(IMAGE), decode_png(MASK)[..., 0]
    keep = mask == 0
    assert np.array_equal(result[keep], original[keep])
    assert not np.array_equal(result[~keep], original[~keep])


async def test_a_failing_hosted_provider_falls_back_to_the_next_with_one_charge(
    harness: Any,
) -> None:
    first = ScriptedHosted("first", credits_per_job=2)
    second = ScriptedHosted("second", credits_per_job=3)
    first.answer(ProviderUnavailable("upstream answered 503"))
    async with harness(plans=[PAID], providers=[first, second], environment="staging") as h:
        await grant(h.account, 10)
        events = await outcome(h.edit, inline())
        assert isinstance(events, list)
        routing = events[0].accepted.routing
        assert (routing.chosen, list(routing.candidates)) == ("first", ["first", "second"])
        assert events[-1].completed.cost_credits == 3
        assert (first.calls, second.calls) == (1, 1)
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved, usage.quota_used) == (7, 0, 1)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")
        assert_unmasked_pixels_are_the_inputs(events[-1].completed.data)
        states = await breakers(h)
        assert states["first"].state == common_pb2.CIRCUIT_STATE_CLOSED
        assert states["first"].recent_failures == 1


async def test_unmasked_pixels_stay_exact_for_a_hosted_provider_that_changed_them(
    harness: Any,
) -> None:
    hosted = ScriptedHosted("hosted")
    async with harness(plans=[PAID], providers=[hosted], environment="staging") as h:
        await grant(h.account, 10)
        events = await outcome(h.edit, inline())
        assert isinstance(events, list)
        assert_unmasked_pixels_are_the_inputs(events[-1].completed.data)


async def test_all_down_is_unavailable_then_the_open_breakers_refuse_and_a_probe_closes_them(
    harness: Any,
) -> None:
    clock = ManualClock()
    first = ScriptedHosted("first", credits_per_job=2)
    second = ScriptedHosted("second", credits_per_job=3)
    first.answer(ProviderUnavailable("upstream answered 503", retry_after=40.0))
    second.answer(ProviderTimeout("no answer within 30 s"))
    async with tripping(harness, first, second, clock=clock) as h:
        await grant(h.account, 10)
        failed = await outcome(h.edit, inpaint())
        assert isinstance(failed, aio.AioRpcError)
        assert failed.code() == grpc.StatusCode.UNAVAILABLE
        assert "first" in (failed.details() or "")
        assert "second" in (failed.details() or "")
        assert retry_delay(failed) == COOL_DOWN_S  # the earliest re-probe, not 40 s
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved) == (10, 0)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")

        states = await breakers(h)
        for name in ("first", "second"):
            assert states[name].state == common_pb2.CIRCUIT_STATE_OPEN
            assert states[name].reprobe_at.ToSeconds() == int(clock.now() + COOL_DOWN_S)

        clock.advance(5.0)
        refused = await outcome(h.edit, inpaint())
        assert isinstance(refused, aio.AioRpcError)
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_delay(refused) == COOL_DOWN_S - 5.0
        assert "circuit breaker open" in (refused.details() or "")
        assert (first.calls, second.calls) == (1, 1)  # neither provider was touched
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved) == (10, 0)

        clock.advance(COOL_DOWN_S - 5.0)
        states = await breakers(h)
        assert states["first"].state == common_pb2.CIRCUIT_STATE_HALF_OPEN
        probed = await outcome(h.edit, inpaint())
        assert isinstance(probed, list)
        assert probed[0].accepted.routing.chosen == "first"
        reported = {b.provider: b.state for b in probed[0].accepted.routing.breakers}
        assert reported == {
            "first": common_pb2.CIRCUIT_STATE_HALF_OPEN,
            "second": common_pb2.CIRCUIT_STATE_HALF_OPEN,
        }
        assert probed[-1].completed.cost_credits == 2
        assert (first.calls, second.calls) == (2, 1)
        states = await breakers(h)
        assert states["first"].state == common_pb2.CIRCUIT_STATE_CLOSED
        assert states["second"].state == common_pb2.CIRCUIT_STATE_HALF_OPEN
        assert (await h.usage(SUBJECT)).credits_balance == 8


async def test_a_half_open_breaker_lets_exactly_one_probe_through(harness: Any) -> None:
    clock = ManualClock()
    hosted = ScriptedHosted("hosted")
    hosted.answer(ProviderUnavailable("upstream answered 502"))
    async with tripping(harness, hosted, clock=clock) as h:
        await grant(h.account, 10)
        assert isinstance(await outcome(h.edit, inpaint()), aio.AioRpcError)
        clock.advance(COOL_DOWN_S)
        hosted.hold = asyncio.Event()
        hosted.entered.clear()
        probe = asyncio.create_task(outcome(h.edit, inpaint()))
        await hosted.entered.wait()
        second = await outcome(h.edit, inpaint())
        assert isinstance(second, aio.AioRpcError)
        assert second.code() == grpc.StatusCode.UNAVAILABLE
        assert "probe" in (second.details() or "")
        assert hosted.calls == 2
        hosted.hold.set()
        done = await probe
        assert isinstance(done, list)
        assert done[-1].HasField("completed")
        assert (await breakers(h))["hosted"].state == common_pb2.CIRCUIT_STATE_CLOSED


async def test_the_callers_bad_input_never_opens_a_breaker(harness: Any) -> None:
    hosted = ScriptedHosted("hosted")
    hosted.answer(*[ProviderRejected("the prompt is not allowed", field="params.prompt")] * 3)
    async with tripping(harness, hosted) as h:
        await grant(h.account, 10)
        for _ in range(3):
            error = await outcome(h.edit, inpaint())
            assert isinstance(error, aio.AioRpcError)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        state = (await breakers(h))["hosted"]
        assert (state.state, state.recent_failures) == (common_pb2.CIRCUIT_STATE_CLOSED, 0)
        assert (await h.usage(SUBJECT)).credits_balance == 10
        done = await outcome(h.edit, inpaint())
        assert isinstance(done, list)


async def test_rate_limits_count_toward_the_breaker(harness: Any) -> None:
    hosted = ScriptedHosted("hosted")
    hosted.answer(ProviderRateLimited("429 too many requests", retry_after=3.0))
    async with tripping(harness, hosted) as h:
        await grant(h.account, 10)
        limited = await outcome(h.edit, inpaint())
        assert isinstance(limited, aio.AioRpcError)
        assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await breakers(h))["hosted"].state == common_pb2.CIRCUIT_STATE_OPEN


async def test_paid_hosted_providers_never_run_in_local_or_test(harness: Any) -> None:
    for environment in ("local", "test"):
        hosted = ScriptedHosted("hosted", credits_per_job=2)
        local = FakeProvider("local", [Operation.INPAINT], cost=CostModel(credits_per_job=0))
        rules = _rules({"name": "hosted-first", "choose": {"kind": "hosted"}})
        async with harness(
            plans=[PAID],
            providers=[hosted, local],
            environment=environment,
            routing_rules=rules,
        ) as h:
            events = await outcome(h.edit, inpaint())
            assert isinstance(events, list)
            routing = events[0].accepted.routing
            assert routing.chosen == "local"
            assert routing.rule == ""
            assert "no eligible provider" in routing.notes[0]
            assert [(x.provider, x.reason) for x in routing.excluded] == [
                ("hosted", f"paid remote providers are disabled in the {environment} environment")
            ]
            named = await outcome(
                h.edit, inpaint(provider=common_pb2.ProviderChoice(provider="hosted"))
            )
            assert isinstance(named, aio.AioRpcError)
            assert named.code() == grpc.StatusCode.PERMISSION_DENIED
            assert hosted.calls == 0


def _rules(*tables: dict[str, Any]) -> Any:
    from retouch.server.routing_rules import parse_rules

    return parse_rules(list(tables))


async def test_with_every_breaker_open_calls_are_refused_before_anything_is_spent(
    harness: Any,
) -> None:
    clock = ManualClock()
    hosted = ScriptedHosted("hosted")
    hosted.answer(ProviderUnavailable("upstream answered 503"))
    tight = Plan("tight", credits=True, paid_providers=True, rate_per_s=1, burst=3)
    async with tripping(harness, hosted, clock=clock, plan=tight) as h:
        await grant(h.account, 10)
        assert isinstance(await outcome(h.edit, inpaint()), aio.AioRpcError)
        for _ in range(5):  # more calls than the burst: no rate token is taken either
            refused = await outcome(h.edit, inpaint())
            assert isinstance(refused, aio.AioRpcError)
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved, usage.quota_used) == (10, 0, 0)
        subject_bucket = next(b for b in usage.buckets if b.name == "subject")
        assert subject_bucket.tokens == 2  # only the first, failed job took one
        assert hosted.calls == 1
