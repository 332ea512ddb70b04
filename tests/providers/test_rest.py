"""The rest provider against a fake of its API: the requests it sends, the answers it
understands, and every fault a hosted API can throw at it."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
from collections.abc import AsyncIterator
from contextlib import aclosing

import numpy as np
import pytest

from retouch.providers.rest import MANIFEST, RestProvider
from retouch.sdk import (
    EditRequest,
    Event,
    GenerationParams,
    InpaintRequest,
    JobContext,
    OutpaintRequest,
    Padding,
    Progress,
    ProviderBadResponse,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    Result,
    Secret,
    decode_image,
    encode_png,
)
from retouch.sdk.http import AddressPolicy, HttpRuntime
from retouch.sdk.testing import (
    CHECKS,
    Check,
    FakeHttpServer,
    ManualClock,
    RecordedRequest,
    Reply,
    contexts_on,
    sample_context,
    sample_image,
    sample_mask,
)
from retouch.server.registry import ProviderRegistry

API_KEY = "rk-test-0123456789abcdef"
INPAINT = ("POST", "/v1/images/inpaint")
OUTPAINT = ("POST", "/v1/images/outpaint")
FILL = np.array([10, 200, 30], np.uint8)


def painted(request: RecordedRequest, grow: bool) -> Reply:
    """What a well-behaved vendor answers: the input repainted all over (so the
    provider must keep the unmasked pixels itself), grown by the requested side."""
    body = request.json()
    image = decode_image(base64.b64decode(body["image"]), provider="fake")
    height, width = image.shape[:2]
    if grow:
        pixels = body["pixels"]
        if body["direction"] in ("left", "right"):
            width += pixels
        else:
            height += pixels
    out = np.empty((height, width, 3), np.uint8)
    out[...] = FILL
    return Reply.json({"image": base64.b64encode(encode_png(out)).decode(), "credits": 2.5})


@pytest.fixture
async def api() -> AsyncIterator[FakeHttpServer]:
    async with FakeHttpServer() as server:
        server.route(*INPAINT, lambda r: painted(r, grow=False))
        server.route(*OUTPAINT, lambda r: painted(r, grow=True))
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def started(
    api: FakeHttpServer,
    clock: ManualClock,
    addresses: AddressPolicy | None = None,
    **config: object,
) -> RestProvider:
    runtime = HttpRuntime(
        clock=clock,
        sleep=clock.sleep,
        random=lambda: 0.5,
        addresses=addresses or AddressPolicy(),
    )
    provider = RestProvider(runtime=runtime)
    settings: dict[str, object] = {
        "base_url": f"{api.url}/v1",
        "api_key": Secret(API_KEY),
        "model": "vendor-sd-2",
        "read_timeout_s": 0.2,
    }
    settings.update(config)
    await provider.start(settings)
    return provider


@pytest.fixture
async def provider(api: FakeHttpServer, clock: ManualClock) -> AsyncIterator[RestProvider]:
    started_provider = await started(api, clock)
    yield started_provider
    await started_provider.aclose()


def inpaint_request(
    prompt: str = "", strength: float | None = None, guidance_scale: float | None = None
) -> InpaintRequest:
    params = GenerationParams(prompt=prompt, strength=strength, guidance_scale=guidance_scale)
    return InpaintRequest(sample_image(), sample_mask(), "default", seed=77, params=params)


async def run(
    provider: RestProvider, request: EditRequest, context: JobContext | None = None
) -> tuple[list[Progress], Result]:
    context = context if context is not None else sample_context(request)
    async with aclosing(provider.run(request, context)) as events:
        seen: list[Event] = [event async for event in events]
    result = seen[-1]
    assert isinstance(result, Result)
    return [e for e in seen if isinstance(e, Progress)], result


# --- the request on the wire ----------------------------------------------------------


async def test_inpaint_posts_the_documented_json_with_bearer_auth(
    api: FakeHttpServer, provider: RestProvider
) -> None:
    request = inpaint_request(prompt="a red door", strength=0.8, guidance_scale=7.5)
    context = sample_context(
        request,
        job_id="job_abc",
        trace_headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
    )
    _, result = await run(provider, request, context)

    [sent] = api.requests_to(*INPAINT)
    assert sent.method == "POST"
    assert sent.path == "/v1/images/inpaint"
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.content_type == "application/json"
    assert sent.headers["Idempotency-Key"] == "job_abc"
    assert sent.headers["traceparent"] == context.trace_headers["traceparent"]
    body = sent.json()
    assert context.image is not None
    assert context.mask is not None
    assert base64.b64decode(body["image"]) == context.image.data, "the original bytes, as sent"
    assert base64.b64decode(body["mask"]) == context.mask.data
    assert body["prompt"] == "a red door"
    assert body["strength"] == 0.8
    assert body["guidance_scale"] == 7.5
    assert body["seed"] == 77
    assert body["model"] == "vendor-sd-2"
    assert "direction" not in body
    assert "negative_prompt" not in body
    assert "steps" not in body

    keep = sample_mask() == 0
    assert np.array_equal(result.image[keep], sample_image()[keep]), "unmasked pixels kept"
    assert (result.image[~keep] == FILL).all(), "masked pixels are the vendor's"
    assert result.usage is not None
    assert result.usage.provider_credits == 2.5


async def test_under_a_host_that_composites_the_answer_comes_back_as_the_vendor_sent_it(
    api: FakeHttpServer, provider: RestProvider
) -> None:
    request = inpaint_request()
    context = dataclasses.replace(sample_context(request), host_composites=True)
    _, result = await run(provider, request, context)
    assert result.image.shape == sample_image().shape
    assert (result.image == FILL).all(), "the host puts the unmasked pixels back itself"


async def test_without_the_original_bytes_the_pixels_are_sent_as_png(
    api: FakeHttpServer, provider: RestProvider
) -> None:
    request = inpaint_request()
    await run(provider, request, JobContext("job_plain"))

    body = api.requests_to(*INPAINT)[0].json()
    image = decode_image(base64.b64decode(body["image"]), provider="test")
    mask = decode_image(base64.b64decode(body["mask"]), provider="test")
    assert np.array_equal(image, sample_image())
    assert np.array_equal(mask[..., 0], sample_mask())


async def test_outpaint_calls_once_per_side_each_on_the_previous_result(
    api: FakeHttpServer, provider: RestProvider
) -> None:
    request = OutpaintRequest(sample_image(), Padding(left=16, bottom=8), "default", seed=5)
    progress, result = await run(provider, request, sample_context(request, job_id="job_out"))

    first, second = api.requests_to(*OUTPAINT)
    assert (first.json()["direction"], first.json()["pixels"]) == ("left", 16)
    assert (second.json()["direction"], second.json()["pixels"]) == ("bottom", 8)
    assert first.headers["Idempotency-Key"] == "job_out-left"
    assert second.headers["Idempotency-Key"] == "job_out-bottom"
    grown = decode_image(base64.b64decode(second.json()["image"]), provider="test")
    assert grown.shape == (96, 128 + 16, 3)
    height, width = sample_image().shape[:2]
    assert result.image.shape == (height + 8, width + 16, 3)
    assert np.array_equal(result.image[:height, 16:], sample_image())
    assert (result.image[:, :16] == FILL).all()
    assert [p.fraction for p in progress] == sorted(p.fraction for p in progress)
    assert result.usage is not None
    assert result.usage.images == 2
    assert result.usage.provider_credits == 5.0


async def test_field_names_and_paths_come_from_the_config(
    api: FakeHttpServer, clock: ManualClock
) -> None:
    api.queue(
        "POST",
        "/v1/edit",
        Reply.json({"data": [{"b64": base64.b64encode(encode_png(sample_image())).decode()}]}),
    )
    provider = await started(
        api,
        clock,
        inpaint_path="/edit",
        fields={"image": "init_image", "prompt": "text"},
        answer_fields={"result": "data.0.b64"},
        send_seed=False,
    )
    try:
        await run(provider, inpaint_request(prompt="sky"))
    finally:
        await provider.aclose()
    body = api.requests_to("POST", "/v1/edit")[0].json()
    assert "init_image" in body
    assert "image" not in body
    assert body["text"] == "sky"
    assert body["seed"] == -1


async def test_an_outpaint_side_over_the_limit_is_rejected_before_any_call(
    api: FakeHttpServer, clock: ManualClock
) -> None:
    provider = await started(api, clock, max_outpaint_px=100)
    request = OutpaintRequest(sample_image(), Padding(top=101), "default", seed=5)
    try:
        with pytest.raises(ProviderRejected, match="at most 100 pixels") as caught:
            await run(provider, request)
    finally:
        await provider.aclose()
    assert caught.value.field == "top"
    assert api.requests_to(*OUTPAINT) == []


# --- faults -----------------------------------------------------------------------------


async def test_429_with_retry_after_seconds_waits_that_long_then_succeeds(
    api: FakeHttpServer, provider: RestProvider, clock: ManualClock
) -> None:
    api.queue(*INPAINT, Reply.error(429, headers={"Retry-After": "3"}))
    await run(provider, inpaint_request())
    assert clock.sleeps == [3.0]
    assert len(api.requests_to(*INPAINT)) == 2


async def test_429_with_an_http_date_waits_until_that_date(
    api: FakeHttpServer, provider: RestProvider, clock: ManualClock
) -> None:
    when = email.utils.formatdate(clock.now() + 7, usegmt=True)
    api.queue(*INPAINT, Reply.error(429, headers={"Retry-After": when}))
    await run(provider, inpaint_request())
    assert clock.sleeps == [pytest.approx(7.0, abs=1.0)]


async def test_429_outlasting_the_retries_is_rate_limited_with_the_retry_after(
    api: FakeHttpServer, provider: RestProvider, clock: ManualClock
) -> None:
    api.queue(*INPAINT, *[Reply.error(429, headers={"Retry-After": "2"})] * 3)
    with pytest.raises(ProviderRateLimited) as caught:
        await run(provider, inpaint_request())
    assert caught.value.retry_after == 2.0
    assert "rest" in caught.value.message
    assert "429" in caught.value.message
    assert clock.sleeps == [2.0, 2.0]


async def test_a_retry_after_past_the_deadline_is_not_waited(
    api: FakeHttpServer, provider: RestProvider, clock: ManualClock
) -> None:
    api.queue(*INPAINT, Reply.error(429, headers={"Retry-After": "20"}))
    request = inpaint_request()
    with pytest.raises(ProviderRateLimited):
        await run(provider, request, sample_context(request, clock=clock, timeout=10.0))
    assert clock.sleeps == []
    assert len(api.requests_to(*INPAINT)) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried_with_jittered_backoff(
    api: FakeHttpServer, provider: RestProvider, clock: ManualClock, status: int
) -> None:
    api.queue(*INPAINT, Reply.error(status), Reply.error(status))
    await run(provider, inpaint_request())
    # Full jitter with random() = 0.5: half of 0.5 s, then half of 1 s.
    assert clock.sleeps == [0.25, 0.5]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_outlasting_the_retries_are_unavailable(
    api: FakeHttpServer, provider: RestProvider, status: int
) -> None:
    api.queue(*INPAINT, *[Reply.error(status)] * 3)
    with pytest.raises(ProviderUnavailable, match=f"HTTP {status}") as caught:
        await run(provider, inpaint_request())
    assert not isinstance(caught.value, ProviderBadResponse)


async def test_a_connection_reset_is_retried(api: FakeHttpServer, provider: RestProvider) -> None:
    api.queue(*INPAINT, Reply.reset())
    await run(provider, inpaint_request())
    assert len(api.requests_to(*INPAINT)) == 2


async def test_connection_resets_outlasting_the_retries_are_unavailable(
    api: FakeHttpServer, provider: RestProvider
) -> None:
    api.queue(*INPAINT, Reply.reset(), Reply.reset(), Reply.reset())
    with pytest.raises(ProviderUnavailable, match="connection"):
        await run(provider, inpaint_request())


async def test_a_stall_past_the_read_timeout_times_out(
    api: FakeHttpServer, clock: ManualClock
) -> None:
    provider = await started(api, clock, retry_attempts=1)
    release = asyncio.Event()
    api.queue(*INPAINT, Reply.stall(release))
    try:
        with pytest.raises(ProviderTimeout, match="did not answer in time"):
            await run(provider, inpaint_request())
    finally:
        release.set()
        await provider.aclose()
    assert api.stalled.is_set()


async def test_malformed_json_names_the_provider_and_the_problem(
    api: FakeHttpServer, provider: RestProvider
) -> None:
    api.queue(*INPAINT, Reply.malformed_json())
    with pytest.raises(
        ProviderBadResponse,
        match=r"the rest API answered POST /v1/images/inpaint with malformed JSON",
    ):
        await run(provider, inpaint_request())
    assert len(api.requests_to(*INPAINT)) == 1, "a malformed answer is not retried"


async def test_a_wrong_content_type_is_a_bad_response(
    api: FakeHttpServer, provider: RestProvider
) -> None:
    api.queue(*INPAINT, Reply.wrong_type())
    with pytest.raises(ProviderBadResponse, match="content type 'text/html'"):
        await run(provider, inpaint_request())


async def test_an_answer_without_the_result_field_says_which_field(
    api: FakeHttpServer, provider: RestProvider
) -> None:
    api.queue(*INPAINT, Reply.json({"status": "ok"}))
    with pytest.raises(ProviderBadResponse, match="neither a 'image' nor a 'url' field"):
        await run(provider, inpaint_request())


async def test_a_result_that_is_not_an_image_is_a_bad_response(
    api: FakeHttpServer, provider: RestProvider
) -> None:
    api.queue(*INPAINT, Reply.json({"image": base64.b64encode(b"not a png").decode()}))
    with pytest.raises(ProviderBadResponse, match="not a readable image"):
        await run(provider, inpaint_request())


@pytest.mark.parametrize("announce", [False, True], ids=["chunked", "content-length"])
async def test_a_50_mb_body_over_the_cap_is_refused(
    api: FakeHttpServer, provider: RestProvider, announce: bool
) -> None:
    api.queue(*INPAINT, Reply.oversize(50 * 1024 * 1024, announce=announce))
    with pytest.raises(ProviderBadResponse, match="over the 33554432 byte cap"):
        await run(provider, inpaint_request())


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:{port}/out.png", "http://169.254.169.254/latest/meta-data/"]
)
async def test_output_urls_at_loopback_or_metadata_addresses_are_refused(
    api: FakeHttpServer, clock: ManualClock, url: str
) -> None:
    port = api.url.rsplit(":", 1)[1]
    target = url.format(port=port)
    api.queue(*INPAINT, Reply.json({"url": target}))
    provider = await started(
        api, clock, download_http=True, download_hosts=["127.0.0.1", "169.254.169.254"]
    )
    try:
        with pytest.raises(ProviderBadResponse, match="refused to fetch"):
            await run(provider, inpaint_request())
    finally:
        await provider.aclose()
    assert api.requests_to("GET", "/out.png") == [], "nothing was fetched"


async def test_an_output_url_redirecting_to_metadata_is_refused_at_the_hop(
    api: FakeHttpServer, clock: ManualClock
) -> None:
    api.queue(*INPAINT, Reply.json({"url": api.url_for("/out.png")}))
    api.queue("GET", "/out.png", Reply.redirect("http://169.254.169.254/latest/meta-data/"))
    provider = await started(
        api,
        clock,
        addresses=AddressPolicy.allowing("127.0.0.1"),
        download_http=True,
        download_hosts=["127.0.0.1", "169.254.169.254"],
    )
    try:
        with pytest.raises(ProviderBadResponse, match=r"169\.254\.169\.254"):
            await run(provider, inpaint_request())
    finally:
        await provider.aclose()


async def test_an_output_url_on_an_allowed_host_is_downloaded(
    api: FakeHttpServer, clock: ManualClock
) -> None:
    out = np.zeros_like(sample_image())
    api.queue(*INPAINT, Reply.json({"url": api.url_for("/out.png")}))
    api.queue("GET", "/out.png", Reply.raw(encode_png(out), "image/png"))
    provider = await started(
        api,
        clock,
        addresses=AddressPolicy.allowing("127.0.0.1"),
        download_http=True,
        download_hosts=["127.0.0.1"],
    )
    try:
        _, result = await run(provider, inpaint_request())
    finally:
        await provider.aclose()
    hole = sample_mask() > 0
    assert (result.image[hole] == 0).all()


async def test_the_api_key_never_appears_in_errors(
    api: FakeHttpServer, provider: RestProvider
) -> None:
    api.queue(*INPAINT, Reply.error(400, error=f"bad key {API_KEY} for Bearer {API_KEY}"))
    with pytest.raises(ProviderRejected) as caught:
        await run(provider, inpaint_request())
    assert API_KEY not in str(caught.value)
    assert "***" in caught.value.message


# --- configuration and conformance -------------------------------------------------------


async def test_a_plain_string_api_key_is_refused() -> None:
    with pytest.raises(ValueError, match="environment variable"):
        await RestProvider().start({"base_url": "https://x.example", "api_key": API_KEY})


async def test_base_url_is_required_and_unknown_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="'base_url' is required"):
        await RestProvider().start({"model": "m"})
    with pytest.raises(ValueError, match="unknown config key"):
        await RestProvider().start({"base_url": "https://x.example", "colour": "red"})


async def test_without_a_config_table_it_stays_off_rather_than_broken() -> None:
    with pytest.raises(ProviderNotConfigured, match=r"add a \[providers.rest\] table"):
        await RestProvider().start({})
    registry = await ProviderRegistry.discover(configs={})
    assert "rest" in registry.unconfigured
    assert "rest" not in registry.broken
    assert "rest" not in registry.providers


def test_the_manifest_is_remote_with_a_metered_cost() -> None:
    assert MANIFEST.remote
    assert MANIFEST.cost.metered
    assert MANIFEST.cost.estimate(1024, 1024) == 1 + 2 + 8


@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_conformance(provider: RestProvider, clock: ManualClock, check: Check) -> None:
    await check(provider, contexts=contexts_on(clock))
