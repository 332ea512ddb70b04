"""FakeProvider: predictable pixels and the knobs a test of provider-driving code needs."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import numpy as np
import pytest

from retouch.sdk import (
    CostModel,
    EnhanceKind,
    EnhanceRequest,
    Event,
    Health,
    HealthReport,
    InpaintRequest,
    Operation,
    OutpaintRequest,
    Padding,
    Progress,
    ProviderRejected,
    ProviderUnavailable,
    Result,
)
from retouch.sdk.testing import FakeProvider, sample_context, sample_image, sample_mask


def inpaint_request(model: str = "fake") -> InpaintRequest:
    return InpaintRequest(sample_image(), sample_mask(), model, seed=7)


async def run(
    provider: FakeProvider, request: InpaintRequest | OutpaintRequest | EnhanceRequest
) -> list[Event]:
    async with aclosing(provider.run(request, sample_context(request))) as events:
        return [event async for event in events]


async def test_inpaint_fills_the_mask_with_the_flat_colour_and_keeps_the_rest() -> None:
    fake = FakeProvider(fill=(1, 2, 3), steps=2)
    events = await run(fake, inpaint_request())

    assert [type(e) for e in events] == [Progress, Progress, Result]
    assert [e.fraction for e in events if isinstance(e, Progress)] == [0.5, 1.0]
    result = events[-1]
    assert isinstance(result, Result)
    mask = sample_mask() > 0
    assert (result.image[mask] == (1, 2, 3)).all()
    assert np.array_equal(result.image[~mask], sample_image()[~mask])
    assert result.metadata == {"provider": "fake", "model": "fake", "seed": "7"}
    assert fake.calls == 1
    assert fake.requests[0].seed == 7


async def test_outpaint_and_enhance_have_the_requested_sizes() -> None:
    fake = FakeProvider(steps=0)
    image = sample_image()
    (out,) = await run(fake, OutpaintRequest(image, Padding(left=3, bottom=5), "fake", 0))
    assert isinstance(out, Result)
    assert out.image.shape == (101, 131, 3)
    assert np.array_equal(out.image[:96, 3:], image)
    (up,) = await run(fake, EnhanceRequest(image, EnhanceKind.UPSCALE, "fake", 0, scale=4))
    assert isinstance(up, Result)
    assert up.image.shape == (384, 512, 3)


def test_the_manifest_follows_the_constructor() -> None:
    fake = FakeProvider(
        "slow-fake",
        [Operation.INPAINT],
        models=("a", "b"),
        max_pixels=1000,
        cost=CostModel(credits_per_megapixel=5),
        remote=True,
    )
    manifest = fake.manifest
    assert manifest.name == "slow-fake"
    assert manifest.operations == {Operation.INPAINT}
    assert manifest.models == ("a", "b")
    assert manifest.supports_mask
    assert not manifest.supports_outpaint
    assert manifest.upscale_factors == ()
    assert manifest.cost.estimate(2000, 1000) == 10
    assert manifest.remote


async def test_fail_with_is_raised_after_fail_after_progress_events() -> None:
    fake = FakeProvider(fail_with=ProviderUnavailable("down"), fail_after=2)
    seen: list[Event] = []
    async with aclosing(fake.run(inpaint_request(), sample_context(inpaint_request()))) as events:
        seen.append(await anext(events))
        seen.append(await anext(events))
        with pytest.raises(ProviderUnavailable, match="down"):
            await anext(events)
    assert [type(e) for e in seen] == [Progress, Progress]
    assert fake.cancelled == 0
    assert fake.active == 0


async def test_fail_with_defaults_to_failing_before_any_event() -> None:
    fake = FakeProvider(fail_with=ProviderUnavailable("down"))
    with pytest.raises(ProviderUnavailable):
        await run(fake, inpaint_request())


@pytest.mark.parametrize(
    ("provider", "request_", "field"),
    [
        (FakeProvider(), inpaint_request("other"), "model"),
        (FakeProvider(max_pixels=100), inpaint_request(), "image"),
        (FakeProvider(operations=[Operation.ENHANCE]), inpaint_request(), "operation"),
        (
            FakeProvider(upscale_factors=(2,)),
            EnhanceRequest(sample_image(), EnhanceKind.UPSCALE, "fake", 0, scale=4),
            "scale",
        ),
    ],
)
async def test_requests_it_cannot_serve_are_rejected_naming_the_field(
    provider: FakeProvider, request_: InpaintRequest | EnhanceRequest, field: str
) -> None:
    with pytest.raises(ProviderRejected) as raised:
        await run(provider, request_)
    assert raised.value.field == field


async def test_release_holds_jobs_until_set_and_cancellation_is_counted() -> None:
    release = asyncio.Event()
    fake = FakeProvider(release=release, steps=1)
    first_events = [asyncio.Event(), asyncio.Event()]

    async def consume(first: asyncio.Event) -> list[Event]:
        seen: list[Event] = []
        async with aclosing(
            fake.run(inpaint_request(), sample_context(inpaint_request()))
        ) as events:
            async for event in events:
                seen.append(event)
                first.set()
        return seen

    held, cancelled = (asyncio.create_task(consume(first)) for first in first_events)
    for first in first_events:
        await first.wait()
    assert fake.active == 2
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert fake.cancelled == 1
    assert not held.done()

    release.set()
    events = await held
    assert isinstance(events[-1], Result)
    assert fake.active == 0
    assert fake.cancelled == 1


async def test_lifecycle_and_health_are_recorded() -> None:
    fake = FakeProvider()
    await fake.start({"anything": 1})
    assert fake.started
    assert fake.config == {"anything": 1}
    assert await fake.health() == HealthReport(Health.HEALTHY)
    fake.health_report = HealthReport(Health.UNAVAILABLE, "maintenance")
    assert (await fake.health()).health is Health.UNAVAILABLE
    await fake.aclose()
    assert fake.closed


def test_negative_knobs_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        FakeProvider(steps=-1)
