"""The Replicate provider against a local fake of the predictions API: conformance, the
requests it sends, polling and progress, cancelling upstream, faults and refused URLs."""

from __future__ import annotations

import asyncio
import base64
import email.utils
from collections.abc import AsyncIterator
from contextlib import aclosing
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import pytest

from retouch.providers.replicate import ReplicateProvider
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
from retouch.sdk.testing import (
    CHECKS,
    Check,
    FakeHttpServer,
    Reply,
    sample_context,
    sample_image,
    sample_mask,
)
from retouch.server.registry import ProviderRegistry
from tests.providers.fake_replicate import CREATE, DELIVERY_HOST, MODEL_SIDE, TOKEN, FakeReplicate
from tests.providers.hosted import TRACEPARENT, Harness, assert_kept_unmasked, run_job

SD_VERSION = "95b7223104132402a9ae91cc677285bc5eb997834bd2349fa486f53910fd68b3"
MB = 1024 * 1024


def config(fake: FakeReplicate, **extra: Any) -> dict[str, object]:
    """What the server would pass: the resolved secret, the fake's URL, and downloads
    allowed from the fake's delivery host on loopback."""
    return {
        "api_key_env": "REPLICATE_API_TOKEN",
        "api_key": Secret(TOKEN),
        "base_url": fake.base_url,
        "download_http": True,
        "download_hosts": [DELIVERY_HOST],
        "download_allow_networks": ["127.0.0.1/32", "::1/128"],
        **extra,
    }


@pytest.fixture
async def api() -> AsyncIterator[FakeHttpServer]:
    async with FakeHttpServer() as server:
        yield server


@pytest.fixture
def fake(api: FakeHttpServer) -> FakeReplicate:
    return FakeReplicate(api)


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
async def provider(harness: Harness, fake: FakeReplicate) -> AsyncIterator[ReplicateProvider]:
    started = ReplicateProvider(runtime=harness.runtime)
    await started.start(config(fake))
    yield started
    await started.aclose()


def job(prompt: str = "", model: str = "sd-inpaint") -> InpaintRequest:
    return InpaintRequest(sample_image(), sample_mask(), model, 42, GenerationParams(prompt))


async def run(provider: ReplicateProvider, harness: Harness, request: InpaintRequest) -> Result:
    _, result = await run_job(provider, request, harness.context(request))
    return result


# --- conformance and registration ---------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_conforms_to_the_sdk(
    provider: ReplicateProvider, harness: Harness, check: Check
) -> None:
    await check(provider, contexts=harness.context)


async def test_conforms_when_every_prediction_is_polled(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate
) -> None:
    fake.sync = False
    for check in CHECKS:
        await check(provider, contexts=harness.context)


def test_is_registered_as_a_provider_entry_point() -> None:
    (entry,) = (e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "replicate")
    assert entry.load() is ReplicateProvider


async def test_the_manifest_is_remote_and_lists_the_configured_models(
    harness: Harness, fake: FakeReplicate
) -> None:
    provider = ReplicateProvider(runtime=harness.runtime)
    assert provider.manifest.remote
    assert provider.manifest.models == ("sd-inpaint",)
    models = {
        "lama": {"model": "twn39/lama", "version": "c" * 64, "fields": {"prompt": ""}},
        "sd-inpaint": {"model": "stability-ai/stable-diffusion-inpainting"},
    }
    await provider.start(config(fake, models=models, credits_per_predict_second=2.0))
    try:
        manifest = provider.manifest
        assert manifest.models == ("lama", "sd-inpaint")
        assert manifest.cost.estimate(512, 512) == 1 + 30
        assert manifest.cost.actual_credits(Usage(predict_seconds=2.5), 512, 512) == 1 + 5
    finally:
        await provider.aclose()


# --- the requests -------------------------------------------------------------------


async def test_a_short_job_is_one_sync_create_with_the_documented_request(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    request = InpaintRequest(
        sample_image(),
        sample_mask(),
        "sd-inpaint",
        42,
        GenerationParams("a brick wall", "blurry", steps=25, guidance_scale=7.0),
    )
    context = harness.context(request)
    _, result = await run_job(provider, request, context)

    (create,) = api.requests_to("POST", CREATE)
    assert create.bearer == TOKEN
    assert create.content_type == "application/json"
    assert create.headers["Prefer"] == "wait=10"
    assert create.headers["Cancel-After"] == "60s"
    assert create.headers["traceparent"] == TRACEPARENT
    body = create.json()
    assert set(body) == {"version", "input"}
    assert body["version"] == SD_VERSION
    inputs = body["input"]
    assert inputs["prompt"] == "a brick wall"
    assert inputs["negative_prompt"] == "blurry"
    assert inputs["num_inference_steps"] == 25
    assert inputs["guidance_scale"] == 7.0
    assert inputs["seed"] == 42
    assert inputs["num_outputs"] == 1
    prediction = fake.predictions["p0001fake"]
    # The caller's original bytes, not a re-encoding; the mask white where it repaints.
    assert context.image is not None
    assert (
        inputs["image"] == "data:image/png;base64," + base64.b64encode(context.image.data).decode()
    )
    np.testing.assert_array_equal(fake.input_image(prediction, "image"), request.image)
    np.testing.assert_array_equal(fake.input_image(prediction, "mask"), request.mask)
    assert set(np.unique(fake.input_image(prediction, "mask"))) <= {0, 255}

    # The output was 512 x 512 with every pixel changed: it comes back at the input's
    # size, unmasked pixels exact.
    assert request.image.shape[0] != MODEL_SIDE
    assert_kept_unmasked(request, result.image)
    assert result.usage == Usage(predict_seconds=2.5, images=1)
    assert result.metadata["prediction_id"] == "p0001fake"
    assert result.metadata["seed"] == "42"
    # No polling was needed, and the token never went to the download host.
    assert not api.requests_to("GET", "/v1/predictions/p0001fake")
    (download,) = api.requests_to("GET", "/delivery/p0001fake/out-0.png")
    assert "Authorization" not in download.headers


async def test_an_official_model_without_a_version_uses_the_models_endpoint(
    harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    provider = ReplicateProvider(runtime=harness.runtime)
    models = {"sd": {"model": "stability-ai/stable-diffusion-inpainting"}}
    await provider.start(config(fake, models=models, wait_s=0))
    try:
        await run(provider, harness, job(model="sd"))
    finally:
        await provider.aclose()
    (create,) = api.requests_to(
        "POST", "/v1/models/stability-ai/stable-diffusion-inpainting/predictions"
    )
    assert "version" not in create.json()
    assert "Prefer" not in create.headers


async def test_a_model_that_repaints_black_is_sent_the_inverted_mask(
    harness: Harness, fake: FakeReplicate
) -> None:
    provider = ReplicateProvider(runtime=harness.runtime)
    models = {"inverse": {"model": "owner/inverse", "version": "d" * 64, "mask": "black"}}
    await provider.start(config(fake, models=models))
    try:
        request = job(model="inverse")
        await run(provider, harness, request)
    finally:
        await provider.aclose()
    sent = fake.input_image(fake.predictions["p0001fake"], "mask")
    np.testing.assert_array_equal(sent, 255 - request.mask)


async def test_the_wait_and_the_deadline_shrink_to_the_time_left(
    provider: ReplicateProvider, harness: Harness, api: FakeHttpServer
) -> None:
    request = job()
    await run_job(provider, request, harness.context(request, timeout=4.5))
    (create,) = api.requests_to("POST", CREATE)
    assert create.headers["Prefer"] == "wait=4"
    assert create.headers["Cancel-After"] == "5s"


async def test_a_long_prediction_is_polled_with_progress_from_its_logs(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    fake.sync, fake.steps = False, 4
    request = job()
    progress, result = await run_job(provider, request, harness.context(request))
    polls = api.requests_to("GET", "/v1/predictions/p0001fake")
    assert len(polls) == 4
    assert all(poll.bearer == TOKEN for poll in polls)
    fractions = [event.fraction for event in progress]
    assert fractions == sorted(fractions)
    # starting 0.05, then the logs' 25 %, 50 %, 75 % as 0.1 + 0.8 x percent.
    assert [f for f in fractions if 0 < f < 0.9] == pytest.approx([0.05, 0.3, 0.5, 0.7])
    assert progress[-1].stage == "downloading the result"
    # The first poll is at once; the waits between grew from poll_interval_s.
    assert harness.clock.sleeps == [1.0, 1.5, 2.25]
    assert_kept_unmasked(request, result.image)


async def test_a_data_url_output_is_decoded_without_a_download(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    fake.data_url_output = True
    request = job()
    result = await run(provider, harness, request)
    assert_kept_unmasked(request, result.image)
    assert not api.requests_to("GET", "/delivery/p0001fake/out-0.png")


async def test_the_input_goes_as_the_stores_url_when_there_is_one(
    provider: ReplicateProvider, harness: Harness, api: FakeHttpServer
) -> None:
    request = job()
    context = sample_context(request, image_url="https://bucket.example/in.png?X-Amz-Signature=s")
    _, result = await run_job(provider, request, context)
    inputs = api.requests_to("POST", CREATE)[0].json()["input"]
    assert inputs["image"] == "https://bucket.example/in.png?X-Amz-Signature=s"
    assert inputs["mask"].startswith("data:image/png;base64,")
    keep = request.mask == 0
    np.testing.assert_array_equal(result.image[keep], request.image[keep])


# --- refusals before any call -------------------------------------------------------


async def test_unknown_models_and_knobs_are_refused_before_any_call(
    harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    provider = ReplicateProvider(runtime=harness.runtime)
    models = {"lama": {"model": "twn39/lama", "version": "c" * 64, "fields": {"prompt": ""}}}
    await provider.start(config(fake, models=models))
    try:
        for request, field in (
            (job(model="sd-inpaint"), "model"),
            (job("a cat", "lama"), "prompt"),
        ):
            with pytest.raises(ProviderRejected) as caught:
                await run(provider, harness, request)
            assert caught.value.field == field
    finally:
        await provider.aclose()
    assert api.requests == []


# --- cancelling ---------------------------------------------------------------------


async def test_closing_a_job_mid_prediction_cancels_it_upstream(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    fake.sync, fake.hang = False, True
    request = job()
    events = provider.run(request, harness.context(request))
    async for event in events:
        assert isinstance(event, Progress)
        if event.stage.startswith("running"):
            break
    assert not fake.cancelled.is_set()
    await events.aclose()
    # The job waits (up to cancel_timeout_s, 1 s) for the cancel call, so it has
    # arrived by the time closing returns.
    assert fake.cancelled.is_set()
    (cancel,) = api.requests_to("POST", "/v1/predictions/p0001fake/cancel")
    assert cancel.bearer == TOKEN
    assert fake.predictions["p0001fake"].status == "canceled"


async def test_cancelling_the_consumer_mid_prediction_cancels_it_upstream(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    fake.sync, fake.hang = False, True
    request = job()
    running = asyncio.Event()

    async def consume() -> None:
        async with aclosing(provider.run(request, harness.context(request))) as events:
            async for event in events:
                assert isinstance(event, Progress)
                if event.stage.startswith("running"):
                    running.set()

    task = asyncio.create_task(consume())
    await running.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.cancelled.is_set()
    assert len(api.requests_to("POST", "/v1/predictions/p0001fake/cancel")) == 1


async def test_a_prediction_past_the_deadline_times_out_and_is_cancelled(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate
) -> None:
    fake.sync, fake.hang = False, True
    request = job()
    with pytest.raises(ProviderTimeout, match="deadline"):
        await run_job(provider, request, harness.context(request, timeout=20.0))
    assert fake.cancelled.is_set()


async def test_a_finished_prediction_is_not_cancelled(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    fake.sync = False
    await run(provider, harness, job())
    assert not fake.cancelled.is_set()
    assert not api.requests_to("POST", "/v1/predictions/p0001fake/cancel")


# --- outcomes -----------------------------------------------------------------------


async def test_the_nsfw_checker_refusal_is_a_clear_rejection(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate
) -> None:
    fake.fail_with = "NSFW content detected. Try running it again, or try a different prompt."
    with pytest.raises(ProviderRejected, match="safety checker") as caught:
        await run(provider, harness, job("something"))
    assert caught.value.field == "prompt"
    assert not caught.value.retryable


async def test_a_failed_prediction_is_retryable_elsewhere(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate
) -> None:
    fake.fail_with = "CUDA out of memory"
    with pytest.raises(ProviderUnavailable, match="CUDA out of memory") as caught:
        await run(provider, harness, job())
    assert caught.value.retryable


async def test_a_prediction_cancelled_by_someone_else_is_unavailable(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    fake.sync = False
    api.queue(
        "GET", "/v1/predictions/p0001fake", Reply.json({"id": "p0001fake", "status": "canceled"})
    )
    with pytest.raises(ProviderUnavailable, match="was canceled"):
        await run(provider, harness, job())


# --- faults -------------------------------------------------------------------------


async def test_429_with_retry_after_in_seconds_is_waited_then_retried(
    provider: ReplicateProvider, harness: Harness, api: FakeHttpServer
) -> None:
    api.queue("POST", CREATE, Reply.error(429, headers={"Retry-After": "7"}))
    request = job()
    result = await run(provider, harness, request)
    assert_kept_unmasked(request, result.image)
    assert harness.clock.sleeps == [7.0]
    assert len(api.requests_to("POST", CREATE)) == 2


async def test_429_with_retry_after_as_an_http_date_is_waited_then_retried(
    provider: ReplicateProvider, harness: Harness, api: FakeHttpServer
) -> None:
    when = email.utils.formatdate(harness.clock.now() + 12, usegmt=True)
    api.queue("POST", CREATE, Reply.error(429, headers={"Retry-After": when}))
    await run(provider, harness, job())
    (delay,) = harness.clock.sleeps
    assert 11.0 <= delay <= 12.0  # HTTP-dates have whole seconds


async def test_a_429_that_outlasts_the_retries_is_rate_limited_with_retry_after(
    provider: ReplicateProvider, harness: Harness, api: FakeHttpServer
) -> None:
    api.queue("POST", CREATE, *[Reply.error(429, headers={"Retry-After": "3"})] * 3)
    with pytest.raises(ProviderRateLimited) as caught:
        await run(provider, harness, job())
    assert caught.value.retry_after == 3.0
    assert len(api.requests_to("POST", CREATE)) == 3


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_on_a_poll_are_retried_with_backoff(
    provider: ReplicateProvider,
    harness: Harness,
    fake: FakeReplicate,
    api: FakeHttpServer,
    status: int,
) -> None:
    fake.sync, fake.steps = False, 1
    api.queue("GET", "/v1/predictions/p0001fake", Reply.error(status))
    request = job()
    result = await run(provider, harness, request)
    assert_kept_unmasked(request, result.image)
    # One poll wait of 1 s, then the retry's backoff: full jitter, 0.5 x base 0.5 s.
    assert harness.clock.sleeps == [0.25]
    assert len(api.requests_to("GET", "/v1/predictions/p0001fake")) == 2


@pytest.mark.parametrize(
    "fault", [Reply.error(500), Reply.error(502), Reply.error(503), Reply.reset()]
)
async def test_a_create_is_never_retried_into_a_second_prediction(
    provider: ReplicateProvider, harness: Harness, api: FakeHttpServer, fault: Reply
) -> None:
    """Replicate may have created the prediction before failing to answer: the job
    fails at once, retryably, and the server falls back instead."""
    api.queue("POST", CREATE, fault)
    with pytest.raises(ProviderUnavailable) as caught:
        await run(provider, harness, job())
    assert caught.value.retryable
    assert len(api.requests_to("POST", CREATE)) == 1
    assert harness.clock.sleeps == []


async def test_server_errors_that_persist_on_polls_are_unavailable(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    fake.sync = False
    api.queue("GET", "/v1/predictions/p0001fake", *[Reply.error(503)] * 3)
    with pytest.raises(ProviderUnavailable, match="503") as caught:
        await run(provider, harness, job())
    assert caught.value.retryable
    assert fake.cancelled.is_set()  # the prediction still ran upstream


async def test_a_connection_reset_is_retried(
    provider: ReplicateProvider, harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    fake.sync = False
    api.queue("GET", "/v1/predictions/p0001fake", Reply.reset())
    request = job()
    result = await run(provider, harness, request)
    assert_kept_unmasked(request, result.image)
    assert len(api.requests_to("GET", "/v1/predictions/p0001fake")) == 4


async def test_a_stall_past_the_socket_read_timeout_is_a_timeout(
    harness: Harness, fake: FakeReplicate, api: FakeHttpServer
) -> None:
    provider = ReplicateProvider(runtime=harness.runtime)
    await provider.start(config(fake, read_timeout_s=0.05, retry_attempts=1))
    release = asyncio.Event()
    api.queue("POST", CREATE, Reply.stall(release))
    try:
        with pytest.raises(ProviderTimeout, match="did not answer in time"):
            await run(provider, harness, job())
    finally:
        release.set()
        await provider.aclose()


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply.malformed_json(status=201), "malformed JSON"),
        (Reply.wrong_type(status=201), "content type 'text/html'"),
        (Reply.json({"id": "p1", "status": "succeeded", "output": None}, status=201), "image URL"),
        (Reply.oversize(50 * MB), "over the"),
        (Reply.oversize(50 * MB, announce=True), "over the"),
    ],
)
async def test_unusable_answers_are_bad_responses_naming_the_problem(
    provider: ReplicateProvider, harness: Harness, api: FakeHttpServer, reply: Reply, words: str
) -> None:
    api.queue("POST", CREATE, reply)
    with pytest.raises(ProviderBadResponse, match=words) as caught:
        await run(provider, harness, job())
    assert "replicate" in caught.value.message


async def test_an_output_over_the_cap_is_refused(
    provider: ReplicateProvider, harness: Harness, api: FakeHttpServer
) -> None:
    api.queue(
        "GET", "/delivery/p0001fake/out-0.png", Reply.oversize(50 * MB, content_type="image/png")
    )
    with pytest.raises(ProviderBadResponse, match="over the"):
        await run(provider, harness, job())


async def test_a_rejected_token_is_unavailable_and_never_shown(
    harness: Harness, fake: FakeReplicate
) -> None:
    provider = ReplicateProvider(runtime=harness.runtime)
    await provider.start(config(fake, api_key=Secret("r8_wrong-token-abcdef")))
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await run(provider, harness, job())
    finally:
        await provider.aclose()
    assert "401" in caught.value.message
    assert "r8_wrong-token-abcdef" not in str(caught.value)


# --- refused output URLs ------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", DELIVERY_HOST])
async def test_an_output_url_on_loopback_is_refused_and_never_fetched(
    harness: Harness, fake: FakeReplicate, api: FakeHttpServer, host: str
) -> None:
    """An address literal, or a listed name that resolves to loopback: both refused
    once the config no longer allows loopback networks."""
    provider = ReplicateProvider(runtime=harness.runtime)
    settings = config(fake)
    del settings["download_allow_networks"]
    await provider.start(settings)
    fake.output_url = lambda base, id: f"{base}/delivery/{id}/out-0.png".replace(
        "//127.0.0.1:", f"//{host}:"
    )
    try:
        with pytest.raises(ProviderBadResponse, match=r"127\.0\.0\.1") as caught:
            await run(provider, harness, job())
    finally:
        await provider.aclose()
    assert "refused" in caught.value.message
    assert not api.requests_to("GET", "/delivery/p0001fake/out-0.png")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://replicate.delivery.attacker.example/out.png",
        "file:///etc/passwd",
    ],
)
async def test_output_urls_off_the_allow_list_or_at_metadata_are_refused(
    harness: Harness, fake: FakeReplicate, url: str
) -> None:
    provider = ReplicateProvider(runtime=harness.runtime)
    # Even listed as a download host, the metadata address stays refused.
    await provider.start(config(fake, download_hosts=["169.254.169.254"]))
    fake.output_url = lambda _base, _id: url
    try:
        with pytest.raises(ProviderBadResponse, match=r"refused|image URL"):
            await run(provider, harness, job())
    finally:
        await provider.aclose()


# --- in the server's registry -------------------------------------------------------


async def test_the_server_leaves_it_out_quietly_until_it_is_configured() -> None:
    entries = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "replicate"]
    registry = await ProviderRegistry.discover(configs={}, entries=entries)
    assert registry.providers == {}
    assert registry.broken == {}
    assert "replicate" in registry.unconfigured


async def test_the_server_sees_the_models_its_config_gives(fake: FakeReplicate) -> None:
    entries = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "replicate"]
    models = {"lama": {"model": "twn39/lama", "version": "c" * 64}}
    table = config(fake, models=models)
    del table["api_key"]  # the server resolves api_key_env itself
    registry = await ProviderRegistry.discover(
        configs={"replicate": table}, entries=entries, environ={"REPLICATE_API_TOKEN": TOKEN}
    )
    try:
        assert registry.broken == {}
        assert registry.providers["replicate"].manifest.models == ("lama",)
    finally:
        await registry.aclose()
