"""The Stability provider against a fake of the v2beta API: the requests it sends, the
answers it reads, the faults it survives, and what each job costs."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import aclosing
from importlib.metadata import entry_points

import numpy as np
import pytest
from PIL import Image

from retouch.providers.stability import MANIFEST, StabilityProvider
from retouch.sdk import (
    ENTRY_POINT_GROUP,
    EditRequest,
    EncodedImage,
    EnhanceKind,
    EnhanceRequest,
    GenerationParams,
    InpaintRequest,
    JobContext,
    OutpaintRequest,
    Padding,
    ProviderRejected,
    ProviderUnavailable,
    Secret,
)
from retouch.sdk.testing import CHECKS, Check, FakeHttpServer, Reply, sample_image, sample_mask

from . import stability_api as fake
from .hosted import (
    API_KEY,
    FATALS,
    TRANSIENTS,
    Fatal,
    Sleeper,
    Transient,
    assert_timeout,
    job_error,
    run_job,
    secret_free,
)
from .stability_api import FakeStability, error, pixels_of

MODEL = "stable-image"
TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


@pytest.fixture
async def api() -> AsyncIterator[FakeHttpServer]:
    async with FakeHttpServer() as server:
        yield server


@pytest.fixture
def stability(api: FakeHttpServer) -> FakeStability:
    return FakeStability(api)


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


async def started(api: FakeHttpServer, sleeper: Sleeper, **config: object) -> StabilityProvider:
    provider = StabilityProvider(runtime=sleeper.runtime())
    await provider.start(
        {
            "api_key_env": "STABILITY_API_KEY",
            "api_key": Secret(API_KEY),
            "base_url": api.url,
            **config,
        }
    )
    return provider


@pytest.fixture
async def provider(
    api: FakeHttpServer, stability: FakeStability, sleeper: Sleeper
) -> AsyncIterator[StabilityProvider]:
    provider = await started(api, sleeper)
    yield provider
    await provider.aclose()


def inpaint(prompt: str = "a red door", seed: int = 42) -> InpaintRequest:
    params = GenerationParams(prompt=prompt, negative_prompt="blurry" if prompt else "")
    return InpaintRequest(sample_image(), sample_mask(), MODEL, seed, params)


def upscale(scale: int) -> EnhanceRequest:
    return EnhanceRequest(sample_image(), EnhanceKind.UPSCALE, MODEL, 9, scale=scale)


def context_for(sleeper: Sleeper, request: EditRequest) -> JobContext:
    context = sleeper.context(request)
    return JobContext(
        job_id=context.job_id,
        deadline=context.deadline,
        clock=context.clock,
        trace_headers=TRACE,
        image=context.image,
        mask=context.mask,
    )


# --- conformance and registration ---------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_conforms_to_the_sdk_against_the_fake(
    provider: StabilityProvider, sleeper: Sleeper, check: Check
) -> None:
    await check(provider, contexts=sleeper.context)


def test_is_registered_as_a_paid_provider_entry_point() -> None:
    (entry,) = (e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "stability")
    assert entry.load() is StabilityProvider
    assert MANIFEST.remote
    assert MANIFEST.enhance_kinds == {EnhanceKind.UPSCALE}


# --- what is sent -------------------------------------------------------------------


async def test_inpaint_sends_the_documented_multipart_request(
    provider: StabilityProvider, stability: FakeStability, sleeper: Sleeper
) -> None:
    request = inpaint()
    context = context_for(sleeper, request)
    await run_job(provider, request, context)
    (sent,) = stability.requests(fake.INPAINT)
    assert sent.method == "POST"
    assert sent.bearer == API_KEY
    assert sent.headers["accept"] == "image/*"
    assert sent.headers["stability-client-id"] == "retouch"
    assert sent.headers["stability-client-version"] == MANIFEST.version
    assert sent.headers["traceparent"] == TRACE["traceparent"]
    form = sent.form()
    texts = {name: part.text for name, part in form.items() if part.filename is None}
    assert texts == {
        "prompt": "a red door",
        "negative_prompt": "blurry",
        "grow_mask": "5",
        "seed": "42",
        "output_format": "png",
    }
    # The caller's PNG travels as it came; the mask is ours, white where to repaint.
    assert context.image is not None
    assert form["image"].data == context.image.data
    assert form["image"].content_type == "image/png"
    mask = pixels_of(form["mask"].data)[..., 0]
    assert np.array_equal(mask, request.mask)


async def test_an_image_with_transparency_is_sent_as_its_decoded_pixels(
    provider: StabilityProvider, stability: FakeStability, sleeper: Sleeper
) -> None:
    request = inpaint()
    rgba = np.dstack([request.image, np.full(request.mask.shape, 128, np.uint8)])
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    context = JobContext(
        job_id="job_rgba", image=EncodedImage(buffer.getvalue(), "image/png"), clock=sleeper.clock
    )
    await run_job(provider, request, context)
    sent = stability.requests(fake.INPAINT)[0].form()["image"].data
    assert sent != buffer.getvalue()
    assert np.array_equal(pixels_of(sent), request.image)


async def test_an_inpaint_without_a_prompt_erases(
    provider: StabilityProvider, stability: FakeStability, sleeper: Sleeper
) -> None:
    request = inpaint(prompt="")
    _, result = await run_job(provider, request, sleeper.context(request))
    (sent,) = stability.requests(fake.ERASE)
    assert "prompt" not in sent.form()
    assert set(sent.form()) == {"image", "mask", "grow_mask", "seed", "output_format"}
    assert result.metadata["service"] == "erase"


async def test_unmasked_pixels_are_exact_although_the_api_changed_every_pixel(
    provider: StabilityProvider, sleeper: Sleeper
) -> None:
    request = inpaint()
    _, result = await run_job(provider, request, sleeper.context(request))
    keep = request.mask == 0
    assert np.array_equal(result.image[keep], request.image[keep])
    masked = request.mask == 255
    assert np.array_equal(result.image[masked], (255 - request.image)[masked])


async def test_outpaint_sends_each_side_and_keeps_the_original_region_exact(
    provider: StabilityProvider, stability: FakeStability, sleeper: Sleeper
) -> None:
    padding = Padding(left=16, right=8, bottom=24)
    request = OutpaintRequest(sample_image(), padding, MODEL, 5, GenerationParams(prompt="sea"))
    _, result = await run_job(provider, request, sleeper.context(request))
    form = stability.requests(fake.OUTPAINT)[0].form()
    assert {k: form[k].text for k in ("left", "right", "down", "prompt")} == {
        "left": "16",
        "right": "8",
        "down": "24",
        "prompt": "sea",
    }
    assert "up" not in form
    width, height = request.output_size
    assert result.image.shape == (height, width, 3)
    region = result.image[0:96, 16 : 16 + 128]
    assert np.array_equal(region, request.image)
    assert (result.image[96:, :] == (0, 200, 0)).all()


async def test_fast_upscale_sends_only_the_image_and_format(
    provider: StabilityProvider, stability: FakeStability, sleeper: Sleeper
) -> None:
    request = upscale(4)
    _, result = await run_job(provider, request, sleeper.context(request))
    form = stability.requests(fake.FAST)[0].form()
    assert set(form) == {"image", "output_format"}
    assert result.image.shape == (96 * 4, 128 * 4, 3)
    assert result.metadata["service"] == "upscale/fast"


async def test_conservative_upscale_is_resized_to_the_factor_asked(
    provider: StabilityProvider, stability: FakeStability, sleeper: Sleeper
) -> None:
    request = upscale(2)
    _, result = await run_job(provider, request, sleeper.context(request))
    form = stability.requests(fake.CONSERVATIVE)[0].form()
    assert form["prompt"].text
    assert form["seed"].text == "9"
    # The fake answered 3x, as the real service answers its own fixed size.
    assert result.image.shape == (96 * 2, 128 * 2, 3)


async def test_json_answers_are_read_from_base64(
    api: FakeHttpServer, stability: FakeStability, sleeper: Sleeper
) -> None:
    provider = await started(api, sleeper, answer="json")
    try:
        request = inpaint(seed=0)
        _, result = await run_job(provider, request, sleeper.context(request))
    finally:
        await provider.aclose()
    assert stability.requests(fake.INPAINT)[0].headers["accept"] == "application/json"
    assert result.metadata["seed"] == fake.SEED_USED
    keep = request.mask == 0
    assert np.array_equal(result.image[keep], request.image[keep])


async def test_the_seed_reported_is_the_one_stability_used(
    provider: StabilityProvider, sleeper: Sleeper
) -> None:
    request = inpaint(seed=0)
    _, result = await run_job(provider, request, sleeper.context(request))
    assert result.metadata["seed"] == fake.SEED_USED


# --- cost ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "config", "credits"),
    [
        (inpaint(), {}, 3),
        (inpaint(prompt=""), {}, 3),
        (OutpaintRequest(sample_image(), Padding(top=32), MODEL, 1), {}, 4),
        (upscale(4), {}, 2),
        (upscale(2), {}, 40),
        (upscale(2), {"upscale_x2": "creative"}, 60),
    ],
    ids=["inpaint", "erase", "outpaint", "fast", "conservative", "creative"],
)
async def test_each_job_costs_the_documented_credits_of_its_service(
    api: FakeHttpServer,
    stability: FakeStability,
    sleeper: Sleeper,
    request_: EditRequest,
    config: dict[str, object],
    credits: int,
) -> None:
    provider = await started(api, sleeper, **config)
    try:
        _, result = await run_job(provider, request_, sleeper.context(request_))
    finally:
        await provider.aclose()
    assert result.usage is not None
    assert result.usage.provider_credits == credits
    height, width = result.image.shape[:2]
    assert MANIFEST.cost.actual_credits(result.usage, width, height) == credits
    assert MANIFEST.cost.estimate(width, height) == 60


# --- the asynchronous creative upscale ---------------------------------------------


async def test_creative_upscale_is_polled_until_done(
    api: FakeHttpServer, stability: FakeStability, sleeper: Sleeper
) -> None:
    stability.creative_busy_polls = 3
    provider = await started(api, sleeper, upscale_x2="creative")
    request = upscale(2)
    try:
        progress, result = await run_job(provider, request, sleeper.context(request))
    finally:
        await provider.aclose()
    (job,) = stability.jobs.values()
    (started_job,) = stability.requests(fake.CREATIVE)
    assert started_job.headers["accept"] == "application/json"
    assert started_job.form()["prompt"].text
    polls = stability.polls(job.id)
    assert len(polls) == 4
    assert all(poll.headers["accept"] == "image/*" for poll in polls)
    assert all(poll.bearer == API_KEY for poll in polls)
    # Stability asks for at most one poll every 10 seconds.
    assert sleeper.delays == [10.0, 10.0, 10.0]
    fractions = [event.fraction for event in progress]
    assert fractions == sorted(fractions)
    assert any("in progress" in event.stage for event in progress)
    assert result.image.shape == (192, 256, 3)


async def test_a_cancelled_creative_upscale_stops_polling_at_once(
    api: FakeHttpServer, stability: FakeStability
) -> None:
    gate = asyncio.Event()
    sleeper = Sleeper(gate=gate)
    stability.creative_busy_polls = None
    provider = await started(api, sleeper, upscale_x2="creative")
    request = upscale(2)

    async def consume() -> None:
        async with aclosing(provider.run(request, sleeper.context(request))) as events:
            async for _ in events:
                pass

    task = asyncio.create_task(consume())
    try:
        await stability.polled.wait()
        stability.polled.clear()
        gate.set()
        await stability.polled.wait()  # a second poll: the job is mid-way
        gate.clear()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (job,) = stability.jobs.values()
        polls = job.polls
        gate.set()
        for _ in range(20):
            await asyncio.sleep(0)
        assert job.polls == polls
        assert not job.finish.is_set()
    finally:
        await provider.aclose()


async def test_an_expired_generation_is_a_retryable_failure(
    api: FakeHttpServer, stability: FakeStability, sleeper: Sleeper
) -> None:
    stability.creative_busy_polls = None
    expired = error(404, "not_found", "id: generation not found or expired")
    api.queue("GET", fake.RESULTS + stability.next_job_id, expired)
    provider = await started(api, sleeper, upscale_x2="creative")
    request = upscale(2)
    try:
        failure = await job_error(provider, request, sleeper.context(request))
    finally:
        await provider.aclose()
    assert isinstance(failure, ProviderUnavailable)


# --- refusals -----------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["image", "json"])
async def test_a_content_filtered_result_is_a_clear_refusal_not_retried(
    api: FakeHttpServer, stability: FakeStability, sleeper: Sleeper, answer: str
) -> None:
    stability.finish_reason = "CONTENT_FILTERED"
    provider = await started(api, sleeper, answer=answer)
    request = inpaint()
    try:
        failure = await job_error(provider, request, sleeper.context(request))
    finally:
        await provider.aclose()
    assert isinstance(failure, ProviderRejected)
    assert not failure.retryable
    assert "moderation" in failure.message
    assert len(stability.requests(fake.INPAINT)) == 1


async def test_a_request_moderation_refused_is_a_clear_refusal(
    provider: StabilityProvider, api: FakeHttpServer, stability: FakeStability, sleeper: Sleeper
) -> None:
    api.queue("POST", fake.INPAINT, error(403, "content_moderation", "Your request was flagged"))
    request = inpaint()
    failure = await job_error(provider, request, sleeper.context(request))
    assert isinstance(failure, ProviderRejected)
    assert "flagged" in failure.message
    assert len(stability.requests(fake.INPAINT)) == 1


async def test_a_bad_request_names_the_field_stability_blamed(
    provider: StabilityProvider, api: FakeHttpServer, sleeper: Sleeper
) -> None:
    api.queue("POST", fake.INPAINT, error(400, "bad_request", "prompt: is too long"))
    request = inpaint()
    failure = await job_error(provider, request, sleeper.context(request))
    assert isinstance(failure, ProviderRejected)
    assert failure.field == "prompt"


async def test_a_refused_key_is_unavailable_and_never_shown(
    api: FakeHttpServer, stability: FakeStability, sleeper: Sleeper
) -> None:
    provider = StabilityProvider(runtime=sleeper.runtime())
    await provider.start({"api_key": Secret("sk-wrong-key-123"), "base_url": api.url})
    request = inpaint()
    try:
        failure = await job_error(provider, request, sleeper.context(request))
    finally:
        await provider.aclose()
    assert isinstance(failure, ProviderUnavailable)
    assert "sk-wrong-key-123" not in str(failure)


# --- faults -------------------------------------------------------------------------


@pytest.mark.parametrize("fault", TRANSIENTS, ids=lambda f: f.name)
async def test_transient_faults_are_retried_to_success(
    provider: StabilityProvider,
    api: FakeHttpServer,
    stability: FakeStability,
    sleeper: Sleeper,
    fault: Transient,
) -> None:
    replies = fault.replies(sleeper.clock)
    api.queue("POST", fake.INPAINT, *replies)
    request = inpaint()
    _, result = await run_job(provider, request, sleeper.context(request))
    assert len(stability.requests(fake.INPAINT)) == len(replies) + 1
    assert sleeper.delays == fault.delays
    assert result.image.shape == request.image.shape


@pytest.mark.parametrize("fault", FATALS, ids=lambda f: f.name)
async def test_faults_that_outlast_retries_fail_the_job_as_documented(
    provider: StabilityProvider, api: FakeHttpServer, sleeper: Sleeper, fault: Fatal
) -> None:
    api.queue("POST", fake.INPAINT, *fault.replies())
    request = inpaint()
    failure = await job_error(provider, request, sleeper.context(request))
    assert isinstance(failure, fault.error), f"{type(failure).__name__}: {failure}"
    assert "stability" in failure.message
    secret_free(failure)


async def test_a_stall_past_the_read_timeout_is_a_timeout(
    api: FakeHttpServer, stability: FakeStability, sleeper: Sleeper
) -> None:
    provider = await started(api, sleeper, read_timeout_s=0.05, retry_attempts=1)
    release = asyncio.Event()
    api.queue("POST", fake.INPAINT, Reply.stall(release))
    request = inpaint()
    try:
        failure = await job_error(provider, request, sleeper.context(request))
    finally:
        release.set()
        await provider.aclose()
    assert_timeout(failure)


async def test_a_json_answer_that_is_not_json_is_a_bad_response(
    api: FakeHttpServer, stability: FakeStability, sleeper: Sleeper
) -> None:
    provider = await started(api, sleeper, answer="json")
    api.queue("POST", fake.INPAINT, Reply.malformed_json())
    bad_base64 = Reply.json({"image": "@@not base64@@", "finish_reason": "SUCCESS", "seed": 1})
    api.queue("POST", fake.ERASE, bad_base64)
    try:
        for request in (inpaint(), inpaint(prompt="")):
            failure = await job_error(provider, request, sleeper.context(request))
            assert "stability" in failure.message
            assert failure.retryable
    finally:
        await provider.aclose()


# --- config -------------------------------------------------------------------------


async def test_the_key_must_come_from_the_environment_not_the_file(api: FakeHttpServer) -> None:
    provider = StabilityProvider()
    with pytest.raises(ValueError, match="environment variable"):
        await provider.start({"api_key": "sk-in-the-file", "base_url": api.url})
    with pytest.raises(ValueError, match="api_key"):
        await provider.start({"base_url": api.url})
    with pytest.raises(ValueError, match="upscale_x4"):
        await provider.start({"api_key": Secret(API_KEY), "upscale_x4": "giant"})
    with pytest.raises(ValueError, match="unknown"):
        await provider.start({"api_key": Secret(API_KEY), "colour": "blue"})


async def test_a_mask_that_does_not_fit_is_refused_before_any_call(
    provider: StabilityProvider, api: FakeHttpServer, sleeper: Sleeper
) -> None:
    request = InpaintRequest(sample_image(), sample_mask(48, 64), MODEL, 1)
    failure = await job_error(provider, request, sleeper.context(request))
    assert isinstance(failure, ProviderRejected)
    assert failure.field == "mask"
    assert api.requests == []


@pytest.mark.parametrize("kind", [EnhanceKind.DENOISE, EnhanceKind.SHARPEN])
async def test_denoise_and_sharpen_are_refused_before_any_call(
    provider: StabilityProvider, api: FakeHttpServer, sleeper: Sleeper, kind: EnhanceKind
) -> None:
    request = EnhanceRequest(sample_image(), kind, MODEL, 1)
    failure = await job_error(provider, request, sleeper.context(request))
    assert isinstance(failure, ProviderRejected)
    assert failure.field == "kind"
    assert api.requests == []
