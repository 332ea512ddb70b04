"""The OpenAI provider against a fake of the image edits endpoint: the request and the
mask convention it sends, the answer it fits back, the faults it survives, the cost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib.metadata import entry_points

import numpy as np
import pytest

from retouch.providers.openai import MANIFEST, OpenAIProvider
from retouch.sdk import (
    ENTRY_POINT_GROUP,
    EditRequest,
    GenerationParams,
    InpaintRequest,
    JobContext,
    Operation,
    OutpaintRequest,
    Padding,
    ProviderRejected,
    ProviderUnavailable,
    Secret,
)
from retouch.sdk.testing import CHECKS, Check, FakeHttpServer, Reply, sample_image, sample_mask

from . import openai_api as fake
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
from .openai_api import FakeOpenAI, error, rgb_of, rgba_of

MODEL = "gpt-image-1"
TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


@pytest.fixture
async def api() -> AsyncIterator[FakeHttpServer]:
    async with FakeHttpServer() as server:
        yield server


@pytest.fixture
def openai(api: FakeHttpServer) -> FakeOpenAI:
    return FakeOpenAI(api)


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


async def started(api: FakeHttpServer, sleeper: Sleeper, **config: object) -> OpenAIProvider:
    provider = OpenAIProvider(runtime=sleeper.runtime())
    await provider.start(
        {
            "api_key_env": "OPENAI_API_KEY",
            "api_key": Secret(API_KEY),
            "base_url": api.url + "/v1",
            **config,
        }
    )
    return provider


@pytest.fixture
async def provider(
    api: FakeHttpServer, openai: FakeOpenAI, sleeper: Sleeper
) -> AsyncIterator[OpenAIProvider]:
    provider = await started(api, sleeper)
    yield provider
    await provider.aclose()


def inpaint(prompt: str = "a wooden bench") -> InpaintRequest:
    return InpaintRequest(sample_image(), sample_mask(), MODEL, 11, GenerationParams(prompt=prompt))


def traced(sleeper: Sleeper, request: EditRequest) -> JobContext:
    context = sleeper.context(request)
    return JobContext(
        job_id="job_openai_0001",
        deadline=context.deadline,
        clock=context.clock,
        trace_headers=TRACE,
        image=context.image,
        mask=context.mask,
    )


# --- conformance and registration ---------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_conforms_to_the_sdk_against_the_fake(
    provider: OpenAIProvider, sleeper: Sleeper, check: Check
) -> None:
    await check(provider, contexts=sleeper.context)


def test_is_registered_as_a_paid_provider_entry_point() -> None:
    (entry,) = (e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "openai")
    assert entry.load() is OpenAIProvider
    assert MANIFEST.remote
    assert MANIFEST.operations == {Operation.INPAINT, Operation.OUTPAINT}


# --- what is sent -------------------------------------------------------------------


async def test_an_edit_sends_the_documented_multipart_request(
    provider: OpenAIProvider, openai: FakeOpenAI, sleeper: Sleeper
) -> None:
    request = inpaint()
    context = traced(sleeper, request)
    await run_job(provider, request, context)
    (sent,) = openai.requests()
    assert sent.method == "POST"
    assert sent.bearer == API_KEY
    assert sent.headers["x-client-request-id"] == "job_openai_0001"
    assert sent.headers["traceparent"] == TRACE["traceparent"]
    form = sent.form()
    texts = {name: part.text for name, part in form.items() if part.filename is None}
    assert texts == {
        "model": "gpt-image-1",
        "prompt": "a wooden bench",
        "n": "1",
        # 128 x 96 is nearest the landscape size.
        "size": "1536x1024",
        "quality": "medium",
        "output_format": "png",
    }
    assert context.image is not None
    assert form["image"].data == context.image.data
    assert form["image"].content_type == "image/png"


async def test_the_mask_is_transparent_exactly_where_pixels_are_replaced(
    provider: OpenAIProvider, openai: FakeOpenAI, sleeper: Sleeper
) -> None:
    request = inpaint()
    await run_job(provider, request, sleeper.context(request))
    part = openai.requests()[0].form()["mask"]
    assert part.content_type == "image/png"
    mask = rgba_of(part.data)
    assert mask.shape == (*request.image.shape[:2], 4)
    assert np.array_equal(mask[..., 3] == 0, request.mask == 255)
    assert (mask[..., 3][request.mask == 0] == 255).all()


async def test_a_default_prompt_is_sent_when_the_caller_gave_none(
    api: FakeHttpServer, openai: FakeOpenAI, sleeper: Sleeper
) -> None:
    provider = await started(api, sleeper, inpaint_prompt="remove it cleanly")
    try:
        request = inpaint(prompt="")
        await run_job(provider, request, sleeper.context(request))
    finally:
        await provider.aclose()
    assert openai.requests()[0].form()["prompt"].text == "remove it cleanly"


async def test_configured_options_travel_as_fields_and_headers(
    api: FakeHttpServer, openai: FakeOpenAI, sleeper: Sleeper
) -> None:
    provider = await started(
        api,
        sleeper,
        quality="high",
        size="1024x1024",
        input_fidelity="high",
        organization="org-fake",
        project="proj_fake",
    )
    try:
        request = inpaint()
        await run_job(provider, request, sleeper.context(request))
    finally:
        await provider.aclose()
    (sent,) = openai.requests()
    form = sent.form()
    assert (form["quality"].text, form["size"].text, form["input_fidelity"].text) == (
        "high",
        "1024x1024",
        "high",
    )
    assert sent.headers["openai-organization"] == "org-fake"
    assert sent.headers["openai-project"] == "proj_fake"


# --- what comes back ----------------------------------------------------------------


async def test_the_answer_is_resized_back_and_unmasked_pixels_are_exact(
    provider: OpenAIProvider, sleeper: Sleeper
) -> None:
    request = inpaint()
    _, result = await run_job(provider, request, sleeper.context(request))
    # The fake answered 1536 x 1024 and nudged every pixel, as the model may.
    assert result.image.shape == request.image.shape
    keep = request.mask == 0
    assert np.array_equal(result.image[keep], request.image[keep])
    edited = result.image[request.mask == 255].astype(float).mean(axis=0)
    assert np.abs(edited - fake.EDIT_COLOUR).max() < 40
    assert result.metadata["request_id"] == "req_fake_0123"
    assert result.metadata["size"] == "1536x1024"


async def test_outpaint_masks_the_margin_of_the_grown_canvas(
    provider: OpenAIProvider, openai: FakeOpenAI, sleeper: Sleeper
) -> None:
    padding = Padding(left=16, right=8, bottom=24)
    request = OutpaintRequest(sample_image(), padding, MODEL, 3)
    _, result = await run_job(provider, request, sleeper.context(request))
    form = openai.requests()[0].form()
    canvas, mask = rgb_of(form["image"].data), rgba_of(form["mask"].data)
    width, height = request.output_size
    assert canvas.shape == (height, width, 3)
    assert mask.shape == (height, width, 4)
    inside = np.zeros((height, width), bool)
    inside[0:96, 16:144] = True
    assert np.array_equal(mask[..., 3] == 255, inside)
    assert np.array_equal(canvas[inside].reshape(96, 128, 3), request.image)
    assert form["prompt"].text.startswith("Extend the picture")
    assert result.image.shape == (height, width, 3)
    assert np.array_equal(result.image[0:96, 16:144], request.image)


async def test_a_large_image_is_shrunk_for_upload_and_fitted_back(
    provider: OpenAIProvider, openai: FakeOpenAI, sleeper: Sleeper
) -> None:
    image = np.ascontiguousarray(np.tile(sample_image(), (17, 17, 1))[:1632, :2176])
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[700:1000, 1000:1300] = 255
    request = InpaintRequest(image, mask, MODEL, 1, GenerationParams(prompt="sky"))
    _, result = await run_job(provider, request, sleeper.context(request))
    form = openai.requests()[0].form()
    assert rgb_of(form["image"].data).shape == (1536, 2048, 3)
    assert rgba_of(form["mask"].data).shape == (1536, 2048, 4)
    assert result.image.shape == image.shape
    assert np.array_equal(result.image[mask == 0], image[mask == 0])


# --- cost ---------------------------------------------------------------------------


async def test_the_tokens_billed_become_the_actual_cost(
    provider: OpenAIProvider, sleeper: Sleeper
) -> None:
    request = inpaint()
    _, result = await run_job(provider, request, sleeper.context(request))
    assert result.usage is not None
    assert result.usage.usd == pytest.approx(0.04537)
    assert MANIFEST.cost.actual_credits(result.usage, 128, 96) == 5
    assert MANIFEST.cost.estimate(128, 96) == 40


async def test_without_a_usage_the_reserved_estimate_stands(
    provider: OpenAIProvider, openai: FakeOpenAI, sleeper: Sleeper
) -> None:
    openai.usage = None
    request = inpaint()
    _, result = await run_job(provider, request, sleeper.context(request))
    assert result.usage is None


# --- refusals -----------------------------------------------------------------------


@pytest.mark.parametrize("code", ["moderation_blocked", "content_policy_violation"])
async def test_a_safety_refusal_is_a_clear_refusal_not_retried(
    provider: OpenAIProvider, api: FakeHttpServer, openai: FakeOpenAI, sleeper: Sleeper, code: str
) -> None:
    refusal = error(400, "Your request was rejected by the safety system.", code=code)
    api.queue("POST", fake.EDITS, refusal)
    request = inpaint()
    failure = await job_error(provider, request, sleeper.context(request))
    assert isinstance(failure, ProviderRejected)
    assert not failure.retryable
    assert "safety system" in failure.message
    assert len(openai.requests()) == 1


async def test_a_bad_request_names_the_parameter_openai_blamed(
    provider: OpenAIProvider, api: FakeHttpServer, sleeper: Sleeper
) -> None:
    api.queue("POST", fake.EDITS, error(400, "Invalid mask image format", param="mask"))
    request = inpaint()
    failure = await job_error(provider, request, sleeper.context(request))
    assert isinstance(failure, ProviderRejected)
    assert failure.field == "mask"


async def test_an_exhausted_quota_is_unavailable_not_a_rate_limit(
    provider: OpenAIProvider, api: FakeHttpServer, sleeper: Sleeper
) -> None:
    quota = error(429, "You exceeded your current quota.", code="insufficient_quota")
    api.queue("POST", fake.EDITS, quota, quota, quota)
    request = inpaint()
    failure = await job_error(provider, request, sleeper.context(request))
    assert type(failure) is ProviderUnavailable
    assert "quota" in failure.message


async def test_a_refused_key_is_unavailable_and_never_shown(
    api: FakeHttpServer, openai: FakeOpenAI, sleeper: Sleeper
) -> None:
    provider = OpenAIProvider(runtime=sleeper.runtime())
    await provider.start({"api_key": Secret("sk-wrong-key-456"), "base_url": api.url + "/v1"})
    request = inpaint()
    try:
        failure = await job_error(provider, request, sleeper.context(request))
    finally:
        await provider.aclose()
    assert isinstance(failure, ProviderUnavailable)
    assert "sk-wrong-key-456" not in str(failure)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (inpaint(prompt="x" * 32_001), "prompt"),
        (InpaintRequest(sample_image(), sample_mask(48, 64), MODEL, 1), "mask"),
        (InpaintRequest(sample_image(), sample_mask(), "dall-e-2", 1), "model"),
    ],
    ids=["prompt too long", "mask of another size", "unknown model"],
)
async def test_bad_requests_are_refused_before_any_call(
    provider: OpenAIProvider,
    api: FakeHttpServer,
    sleeper: Sleeper,
    request_: EditRequest,
    field: str,
) -> None:
    failure = await job_error(provider, request_, sleeper.context(request_))
    assert isinstance(failure, ProviderRejected)
    assert failure.field == field
    assert api.requests == []


# --- faults -------------------------------------------------------------------------


@pytest.mark.parametrize("fault", TRANSIENTS, ids=lambda f: f.name)
async def test_transient_faults_are_retried_to_success(
    provider: OpenAIProvider,
    api: FakeHttpServer,
    openai: FakeOpenAI,
    sleeper: Sleeper,
    fault: Transient,
) -> None:
    replies = fault.replies(sleeper.clock)
    api.queue("POST", fake.EDITS, *replies)
    request = inpaint()
    _, result = await run_job(provider, request, sleeper.context(request))
    assert len(openai.requests()) == len(replies) + 1
    assert sleeper.delays == fault.delays
    assert result.image.shape == request.image.shape


@pytest.mark.parametrize("fault", FATALS, ids=lambda f: f.name)
async def test_faults_that_outlast_retries_fail_the_job_as_documented(
    provider: OpenAIProvider, api: FakeHttpServer, sleeper: Sleeper, fault: Fatal
) -> None:
    api.queue("POST", fake.EDITS, *fault.replies())
    request = inpaint()
    failure = await job_error(provider, request, sleeper.context(request))
    assert isinstance(failure, fault.error), f"{type(failure).__name__}: {failure}"
    assert "openai" in failure.message
    secret_free(failure)


async def test_a_stall_past_the_read_timeout_is_a_timeout(
    api: FakeHttpServer, openai: FakeOpenAI, sleeper: Sleeper
) -> None:
    provider = await started(api, sleeper, read_timeout_s=0.05, retry_attempts=1)
    release = asyncio.Event()
    api.queue("POST", fake.EDITS, Reply.stall(release))
    request = inpaint()
    try:
        failure = await job_error(provider, request, sleeper.context(request))
    finally:
        release.set()
        await provider.aclose()
    assert_timeout(failure)


@pytest.mark.parametrize(
    "document",
    [
        {"data": []},
        {"data": [{"url": "https://example.com/x.png"}]},
        {"data": [{"b64_json": "@@not base64@@"}]},
        {"data": [{"b64_json": "aGVsbG8="}]},
        {"data": [{"b64_json": "aGVsbG8="}], "usage": {"input_tokens": "many"}},
    ],
    ids=["no data", "a url", "not base64", "not an image", "bad usage"],
)
async def test_answers_missing_what_the_docs_promise_are_bad_responses(
    provider: OpenAIProvider, api: FakeHttpServer, sleeper: Sleeper, document: object
) -> None:
    api.queue("POST", fake.EDITS, Reply.json(document))
    request = inpaint()
    failure = await job_error(provider, request, sleeper.context(request))
    assert failure.retryable
    assert "openai" in failure.message


# --- config -------------------------------------------------------------------------


async def test_config_mistakes_are_refused_naming_the_key(api: FakeHttpServer) -> None:
    provider = OpenAIProvider()
    key = {"api_key": Secret(API_KEY)}
    with pytest.raises(ValueError, match="environment variable"):
        await provider.start({"api_key": "sk-in-the-file"})
    for bad, name in (
        ({"quality": "ultra"}, "quality"),
        ({"size": "640x480"}, "size"),
        ({"input_fidelity": "medium"}, "input_fidelity"),
        ({"inpaint_prompt": "x" * 32_001}, "inpaint_prompt"),
        ({"colour": "blue"}, "unknown"),
    ):
        with pytest.raises(ValueError, match=name):
            await provider.start({**key, **bad})
