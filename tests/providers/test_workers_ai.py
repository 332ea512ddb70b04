"""The Workers AI provider against a local fake of its REST API: conformance, the request
it sends (byte arrays, the mask convention, the schema's limits), the error envelope and
faults."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator
from contextlib import aclosing
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import pytest

from retouch.providers.workers_ai import DEFAULT_PROMPT, MODEL, WorkersAIProvider
from retouch.sdk import (
    ENTRY_POINT_GROUP,
    GenerationParams,
    InpaintRequest,
    Progress,
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    Result,
    Secret,
    Usage,
)
from retouch.sdk.testing import CHECKS, Check, FakeHttpServer, Reply, sample_image, sample_mask
from tests.providers.fake_workers_ai import ACCOUNT_ID, RUN_PATH, TOKEN, FakeWorkersAI, envelope
from tests.providers.hosted import TRACEPARENT, Harness, assert_kept_unmasked, run_job

MB = 1024 * 1024


def config(fake: FakeWorkersAI, **extra: Any) -> dict[str, object]:
    return {
        "api_key_env": "CLOUDFLARE_API_TOKEN",
        "api_key": Secret(TOKEN),
        "account_id": ACCOUNT_ID,
        "base_url": fake.base_url,
        **extra,
    }


@pytest.fixture
async def api() -> AsyncIterator[FakeHttpServer]:
    async with FakeHttpServer() as server:
        yield server


@pytest.fixture
def fake(api: FakeHttpServer) -> FakeWorkersAI:
    return FakeWorkersAI(api)


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
async def provider(harness: Harness, fake: FakeWorkersAI) -> AsyncIterator[WorkersAIProvider]:
    started = WorkersAIProvider(runtime=harness.runtime)
    await started.start(config(fake))
    yield started
    await started.aclose()


def job(params: GenerationParams | None = None) -> InpaintRequest:
    return InpaintRequest(sample_image(), sample_mask(), MODEL, 5, params or GenerationParams())


async def run(provider: WorkersAIProvider, harness: Harness, request: InpaintRequest) -> Result:
    _, result = await run_job(provider, request, harness.context(request))
    return result


@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_conforms_to_the_sdk(
    provider: WorkersAIProvider, harness: Harness, check: Check
) -> None:
    await check(provider, contexts=harness.context)


def test_is_registered_as_a_provider_entry_point() -> None:
    (entry,) = (e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "workers-ai")
    assert entry.load() is WorkersAIProvider


def test_the_manifest_is_remote_inpaint_only_and_priced_per_job() -> None:
    manifest = WorkersAIProvider().manifest
    assert manifest.remote
    assert manifest.models == (MODEL,)
    assert manifest.max_pixels == 2048 * 2048
    assert manifest.cost.estimate(2048, 2048) == 2
    assert manifest.cost.actual_credits(Usage(images=1), 2048, 2048) == 2


async def test_a_job_is_one_call_with_the_documented_body(
    provider: WorkersAIProvider, harness: Harness, fake: FakeWorkersAI, api: FakeHttpServer
) -> None:
    request = job(GenerationParams("moss", "text", strength=0.8, guidance_scale=9.0, steps=15))
    context = harness.context(request)
    progress, result = await run_job(provider, request, context)

    (call,) = api.requests_to("POST", RUN_PATH)
    assert call.bearer == TOKEN
    assert call.content_type == "application/json"
    assert call.headers["traceparent"] == TRACEPARENT
    (ran,) = fake.jobs
    body = ran.body
    assert context.image is not None
    assert bytes(body["image"]) == context.image.data  # the original bytes, as sent
    np.testing.assert_array_equal(ran.image, request.image)
    # The mask: a greyscale PNG, white (255) where the model repaints.
    assert ran.mask.ndim == 2
    np.testing.assert_array_equal(ran.mask, request.mask)
    assert set(np.unique(ran.mask)) == {0, 255}
    assert body["prompt"] == "moss"
    assert body["negative_prompt"] == "text"
    assert body["num_steps"] == 15
    assert body["strength"] == 0.8
    assert body["guidance"] == 9.0
    assert body["seed"] == 5
    assert (body["width"], body["height"]) == (256, 256)

    # The fake answered 256 x 256 with every pixel changed.
    assert_kept_unmasked(request, result.image)
    assert result.usage == Usage(images=1)
    assert result.metadata["seed"] == "5"
    assert [event.fraction for event in progress] == [0.0, 0.9]


async def test_without_a_prompt_the_default_prompt_is_sent(
    provider: WorkersAIProvider, harness: Harness, fake: FakeWorkersAI
) -> None:
    await run(provider, harness, job())
    assert fake.jobs[0].body["prompt"] == DEFAULT_PROMPT


async def test_more_steps_than_the_model_runs_are_refused_before_any_call(
    provider: WorkersAIProvider, harness: Harness, api: FakeHttpServer
) -> None:
    with pytest.raises(ProviderRejected, match="1 to 20 steps") as caught:
        await run(provider, harness, job(GenerationParams(steps=30)))
    assert caught.value.field == "steps"
    assert api.requests == []


async def test_an_image_over_the_models_size_is_refused_before_any_call(
    provider: WorkersAIProvider, harness: Harness, api: FakeHttpServer
) -> None:
    large = np.zeros((2049, 2048, 3), np.uint8)
    request = InpaintRequest(large, np.zeros((2049, 2048), np.uint8), MODEL, 1)
    with pytest.raises(ProviderRejected) as caught:
        await run(provider, harness, request)
    assert caught.value.field == "image"
    assert api.requests == []


# --- the error envelope and faults --------------------------------------------------


async def test_out_of_capacity_429_with_retry_after_seconds_is_retried(
    provider: WorkersAIProvider, harness: Harness, api: FakeHttpServer
) -> None:
    busy = envelope(429, 3040, "No more data centers to forward the request to")
    api.queue(
        "POST", RUN_PATH, Reply(busy.code, busy.data, busy.content_type, {"Retry-After": "4"})
    )
    request = job()
    result = await run(provider, harness, request)
    assert_kept_unmasked(request, result.image)
    assert harness.clock.sleeps == [4.0]


async def test_429_with_retry_after_as_an_http_date_is_retried(
    provider: WorkersAIProvider, harness: Harness, api: FakeHttpServer
) -> None:
    when = email.utils.formatdate(harness.clock.now() + 30, usegmt=True)
    api.queue("POST", RUN_PATH, Reply.error(429, headers={"Retry-After": when}))
    await run(provider, harness, job())
    (delay,) = harness.clock.sleeps
    assert 29.0 <= delay <= 30.0


async def test_a_daily_allocation_used_up_is_rate_limited(
    provider: WorkersAIProvider, harness: Harness, api: FakeHttpServer
) -> None:
    api.queue(
        "POST", RUN_PATH, *[envelope(429, 3036, "You have used up your daily free allocation")] * 3
    )
    with pytest.raises(ProviderRateLimited, match="daily free allocation"):
        await run(provider, harness, job())


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried(
    provider: WorkersAIProvider, harness: Harness, api: FakeHttpServer, status: int
) -> None:
    api.queue("POST", RUN_PATH, Reply.error(status), Reply.error(status))
    request = job()
    result = await run(provider, harness, request)
    assert_kept_unmasked(request, result.image)
    assert len(api.requests_to("POST", RUN_PATH)) == 3


async def test_a_connection_reset_is_retried(
    provider: WorkersAIProvider, harness: Harness, fake: FakeWorkersAI, api: FakeHttpServer
) -> None:
    api.queue("POST", RUN_PATH, Reply.reset())
    await run(provider, harness, job())
    assert len(fake.jobs) == 1
    assert len(api.requests_to("POST", RUN_PATH)) == 2


async def test_a_stall_past_the_socket_read_timeout_is_a_timeout(
    harness: Harness, fake: FakeWorkersAI, api: FakeHttpServer
) -> None:
    provider = WorkersAIProvider(runtime=harness.runtime)
    await provider.start(config(fake, read_timeout_s=0.05, retry_attempts=1))
    release = asyncio.Event()
    api.queue("POST", RUN_PATH, Reply.stall(release))
    try:
        with pytest.raises(ProviderTimeout, match="did not answer in time"):
            await run(provider, harness, job())
    finally:
        release.set()
        await provider.aclose()


async def test_a_request_too_large_is_refused_naming_the_image(
    provider: WorkersAIProvider, harness: Harness, api: FakeHttpServer
) -> None:
    api.queue("POST", RUN_PATH, envelope(413, 3006, "Request is too large"))
    with pytest.raises(ProviderRejected, match="too large") as caught:
        await run(provider, harness, job())
    assert caught.value.field == "image"


async def test_an_unknown_model_is_the_operators_to_fix(
    harness: Harness, fake: FakeWorkersAI, api: FakeHttpServer
) -> None:
    model_id = "@cf/runwayml/no-such-model"
    api.route("POST", f"/client/v4/accounts/{ACCOUNT_ID}/ai/run/{model_id}", fake.run)
    provider = WorkersAIProvider(runtime=harness.runtime)
    await provider.start(config(fake, model_id=model_id))
    try:
        with pytest.raises(ProviderUnavailable, match="model_id") as caught:
            await run(provider, harness, job())
    finally:
        await provider.aclose()
    assert caught.value.retryable


async def test_a_schema_error_is_a_rejection_with_the_apis_words(
    provider: WorkersAIProvider, harness: Harness, api: FakeHttpServer
) -> None:
    api.queue(
        "POST", RUN_PATH, envelope(400, 5006, "Error: required properties at '/' are 'prompt'")
    )
    with pytest.raises(ProviderRejected, match="required properties"):
        await run(provider, harness, job())


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply.json({"result": {"image": "base64..."}, "success": True}), "content type"),
        (Reply.wrong_type(), "content type 'text/html'"),
        (Reply.raw(b"\x89PNG\r\n\x1a\n broken", "image/png"), "not a readable image"),
        (Reply.malformed_json(status=500), "500"),
        (Reply.oversize(50 * MB, content_type="image/png"), "over the"),
        (Reply.oversize(50 * MB, content_type="image/png", announce=True), "over the"),
    ],
)
async def test_unusable_answers_are_errors_naming_the_problem(
    harness: Harness, fake: FakeWorkersAI, api: FakeHttpServer, reply: Reply, words: str
) -> None:
    provider = WorkersAIProvider(runtime=harness.runtime)
    await provider.start(config(fake, retry_attempts=1))
    api.queue("POST", RUN_PATH, reply)
    try:
        with pytest.raises(ProviderUnavailable, match=words) as caught:
            await run(provider, harness, job())
    finally:
        await provider.aclose()
    assert "workers-ai" in caught.value.message
    if words != "500":
        assert isinstance(caught.value, ProviderBadResponse)


async def test_a_rejected_token_is_unavailable_and_never_shown(
    harness: Harness, fake: FakeWorkersAI
) -> None:
    provider = WorkersAIProvider(runtime=harness.runtime)
    await provider.start(config(fake, api_key=Secret("cf-wrong-token-123456")))
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await run(provider, harness, job())
    finally:
        await provider.aclose()
    assert "401" in caught.value.message
    assert "cf-wrong-token-123456" not in str(caught.value)


async def test_cancelling_a_job_mid_call_drops_it_promptly(
    provider: WorkersAIProvider, harness: Harness, fake: FakeWorkersAI, api: FakeHttpServer
) -> None:
    release = asyncio.Event()
    api.queue("POST", RUN_PATH, Reply.stall(release))
    request = job()
    seen: list[object] = []

    async def consume() -> None:
        async with aclosing(provider.run(request, harness.context(request))) as events:
            async for event in events:
                seen.append(event)

    task = asyncio.create_task(consume())
    await api.stalled.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert all(isinstance(event, Progress) for event in seen)
    assert fake.jobs == []


async def test_the_api_key_in_the_file_is_refused() -> None:
    provider = WorkersAIProvider()
    with pytest.raises(ValueError, match="environment variable"):
        await provider.start({"account_id": ACCOUNT_ID, "api_key": "in-the-file"})
