"""Token buckets and plan caps: refused early, with the real wait, before any provider runs."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio

from retouch.sdk import CostModel, Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.clock import ManualClock
from retouch.server.policy import Plan
from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import bad_fields, metadata, photo, png, rpc_details
from tests.policy.test_money import SUBJECT, inpaint, outcome


def retry_delay(error: aio.AioRpcError) -> float:
    (info,) = [d for d in rpc_details(error) if isinstance(d, error_details_pb2.RetryInfo)]
    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)


async def test_a_bucket_accepts_at_most_burst_plus_rate_times_window(harness: Any) -> None:
    clock = ManualClock()
    fake = FakeProvider("fake", [Operation.INPAINT], steps=1)
    plan = Plan("slow", rate_per_s=2.0, burst=3)
    async with harness(plans=[plan], providers=[fake], clock=clock) as h:
        accepted = 0
        window = 5.0
        for _ in range(int(window / 0.25)):
            for _ in range(3):
                if isinstance(await outcome(h.edit, inpaint()), list):
                    accepted += 1
            clock.advance(0.25)
        assert accepted <= plan.burst + plan.rate_per_s * window
        assert accepted >= plan.rate_per_s * window  # the limit is not stricter than promised
        assert fake.calls == accepted


async def test_waiting_as_long_as_retry_info_says_gets_through(harness: Any) -> None:
    clock = ManualClock()
    fake = FakeProvider("fake", [Operation.INPAINT], steps=1)
    async with harness(
        plans=[Plan("slow", rate_per_s=0.5, burst=1)], providers=[fake], clock=clock
    ) as h:
        assert isinstance(await outcome(h.edit, inpaint()), list)
        refused = await outcome(h.edit, inpaint())
        assert isinstance(refused, aio.AioRpcError)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        delay = retry_delay(refused)
        assert delay == pytest.approx(2.0, abs=0.01)
        clock.advance(delay * 0.9)
        assert isinstance(await outcome(h.edit, inpaint()), aio.AioRpcError)
        clock.advance(delay * 0.1 + 0.001)
        assert isinstance(await outcome(h.edit, inpaint()), list)
        assert fake.calls == 2


async def test_subjects_have_their_own_buckets(harness: Any) -> None:
    clock = ManualClock()
    fake = FakeProvider("fake", [Operation.INPAINT], steps=1)
    async with harness(
        plans=[Plan("one", rate_per_s=0.1, burst=1)], providers=[fake], clock=clock
    ) as h:
        assert isinstance(await outcome(h.edit, inpaint(), subject="user:a"), list)
        assert isinstance(await outcome(h.edit, inpaint(), subject="user:b"), list)
        assert isinstance(await outcome(h.edit, inpaint(), subject="user:a"), aio.AioRpcError)


@pytest.mark.parametrize(
    ("request_", "reason", "limit"),
    [
        (inpaint(params=common_pb2.GenerationParams(steps=80)), "PLAN_MAX_STEPS", "20"),
        (inpaint(params=common_pb2.GenerationParams(strength=0.9)), "PLAN_MAX_STRENGTH", "0.5"),
        (
            inpaint(output=common_pb2.OutputOptions(format=common_pb2.IMAGE_FORMAT_WEBP)),
            "PLAN_OUTPUT_FORMAT",
            "PNG, JPEG",
        ),
        (
            inpaint(provider=common_pb2.ProviderChoice(provider="premium")),
            "PLAN_PROVIDER_NOT_ALLOWED",
            "fake",
        ),
        (
            pb.InpaintRequest(
                image=common_pb2.ImageInput(data=png(photo((128, 128)))),
                mask=common_pb2.ImageInput(data=png(photo((128, 128))[:, :, 0])),
            ),
            "PLAN_MAX_PIXELS",
            "10000",
        ),
    ],
    ids=["steps", "strength", "format", "provider", "pixels"],
)
async def test_plan_caps_refuse_with_the_limit_before_any_charge(
    harness: Any, request_: pb.InpaintRequest, reason: str, limit: str
) -> None:
    fake = FakeProvider("fake", [Operation.INPAINT])
    premium = FakeProvider("premium", [Operation.INPAINT], cost=CostModel(credits_per_job=5))
    plan = Plan(
        "capped",
        credits=True,
        max_steps=20,
        max_strength=0.5,
        output_formats=("PNG", "JPEG"),
        allowed_providers=("fake",),
        max_pixels=10_000,
    )
    async with harness(plans=[plan], providers=[fake, premium]) as h:
        await h.account.GrantCredits(
            __import__("retouch.v1.account_pb2", fromlist=["x"]).GrantCreditsRequest(
                subject=SUBJECT, credits=10
            ),
            metadata=metadata(),
        )
        error = await outcome(h.edit, request_)
        assert isinstance(error, aio.AioRpcError)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        (info,) = [d for d in rpc_details(error) if isinstance(d, error_details_pb2.ErrorInfo)]
        assert info.reason == reason
        assert info.metadata["limit"] == limit
        assert fake.calls == premium.calls == 0
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.quota_used) == (10, 0)


async def test_local_and_test_environments_refuse_paid_remote_providers(harness: Any) -> None:
    local = FakeProvider("local", [Operation.INPAINT], cost=CostModel(credits_per_job=1))
    remote = FakeProvider(
        "remote",
        [Operation.INPAINT],
        cost=CostModel(credits_per_job=1),
        remote=True,
        quality_rank=9,
    )
    plan = Plan("all", paid_providers=True)
    async with harness(plans=[plan], providers=[local, remote], environment="test") as h:
        named = await outcome(
            h.edit, inpaint(provider=common_pb2.ProviderChoice(provider="remote"))
        )
        assert isinstance(named, aio.AioRpcError)
        assert named.code() == grpc.StatusCode.PERMISSION_DENIED
        events = await outcome(
            h.edit,
            inpaint(provider=common_pb2.ProviderChoice(prefer=common_pb2.ROUTE_PREFERENCE_QUALITY)),
        )
        routing = events[0].accepted.routing
        assert routing.chosen == "local"
        assert [(x.provider, "test environment" in x.reason) for x in routing.excluded] == [
            ("remote", True)
        ]
        assert remote.calls == 0


async def test_staging_allows_paid_remote_providers_per_plan(harness: Any) -> None:
    remote = FakeProvider(
        "remote",
        [Operation.INPAINT],
        cost=CostModel(credits_per_job=0, credits_per_megapixel=1),
        remote=True,
    )
    plans = [Plan("basic"), Plan("pro", paid_providers=True)]
    async with harness(plans=plans, providers=[remote], environment="staging") as h:
        refused = await outcome(h.edit, inpaint())
        assert isinstance(refused, aio.AioRpcError)
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        from retouch.v1 import account_pb2

        await h.account.SetPlan(
            account_pb2.SetPlanRequest(subject=SUBJECT, plan="pro"), metadata=metadata()
        )
        assert isinstance(await outcome(h.edit, inpaint()), list)
        assert remote.calls == 1


async def test_a_bad_max_cost_names_the_field(harness: Any) -> None:
    fake = FakeProvider("fake", [Operation.INPAINT], cost=CostModel(credits_per_job=5))
    async with harness(plans=[Plan("paid", credits=True)], providers=[fake]) as h:
        error = await outcome(
            h.edit, inpaint(provider=common_pb2.ProviderChoice(max_cost_credits=2))
        )
        assert isinstance(error, aio.AioRpcError)
        assert bad_fields(error) == ["provider.max_cost_credits"]
        assert fake.calls == 0


async def test_a_max_cost_no_provider_meets_names_each_provider_and_its_price(
    harness: Any,
) -> None:
    cheap = FakeProvider("cheap", [Operation.INPAINT], cost=CostModel(credits_per_job=4))
    dear = FakeProvider("dear", [Operation.INPAINT], cost=CostModel(credits_per_job=5))
    async with harness(plans=[Plan("paid", credits=True)], providers=[cheap, dear]) as h:
        error = await outcome(
            h.edit, inpaint(provider=common_pb2.ProviderChoice(max_cost_credits=1))
        )
        assert isinstance(error, aio.AioRpcError)
        assert bad_fields(error) == ["provider.max_cost_credits"]
        details = error.details() or ""
        assert "provider 'cheap' costs 4 credits, more than max_cost_credits 1" in details
        assert "provider 'dear' costs 5 credits, more than max_cost_credits 1" in details


def outpaint(**fields: Any) -> pb.OutpaintRequest:
    return pb.OutpaintRequest(image=common_pb2.ImageInput(data=png(photo())), **fields)


async def outpaint_outcome(edit: Any, request: pb.OutpaintRequest) -> Any:
    """The events of an outpaint, or the AioRpcError it ended with."""
    try:
        return [e async for e in edit.Outpaint(request, metadata=metadata(subject=SUBJECT))]
    except aio.AioRpcError as error:
        return error


async def test_an_outpaint_too_large_for_every_provider_is_refused_at_admission(
    harness: Any,
) -> None:
    from retouch.v1 import account_pb2

    # 256x256 padded to 768x256 is 196,608 pixels, over the provider's 131,072.
    small = FakeProvider("small", [Operation.OUTPAINT], max_pixels=256 * 512)
    # One that cannot outpaint at all, like patchmatch, does not hide why the other refused.
    inpainter = FakeProvider("inpainter", [Operation.INPAINT])
    async with harness(plans=[Plan("free")], providers=[small, inpainter]) as h:
        request = outpaint(left=256, right=256)
        error = await outpaint_outcome(h.edit, request)
        assert isinstance(error, aio.AioRpcError)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error) == ["left", "right"]
        assert "provider 'small' takes at most 131072" in (error.details() or "")
        with pytest.raises(aio.AioRpcError) as quoted:
            await h.account.Quote(
                account_pb2.QuoteRequest(outpaint=request), metadata=metadata(subject=SUBJECT)
            )
        assert quoted.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(quoted.value) == ["left", "right"]
        named = await outpaint_outcome(
            h.edit, outpaint(top=300, provider=common_pb2.ProviderChoice(provider="small"))
        )
        assert isinstance(named, aio.AioRpcError)
        assert bad_fields(named) == ["top"]
        assert small.calls == 0


async def test_an_outpaint_over_the_servers_output_limit_names_the_padding_sides(
    harness: Any,
) -> None:
    fake = FakeProvider("fake", [Operation.OUTPAINT])
    async with harness(plans=[Plan("free")], providers=[fake], max_output_pixels=256 * 500) as h:
        error = await outpaint_outcome(h.edit, outpaint(top=128, bottom=128))
        assert isinstance(error, aio.AioRpcError)
        assert bad_fields(error) == ["top", "bottom"]
        assert fake.calls == 0
