"""retouch.sdk.http against the fake provider server: deadlines, retries, error
mapping, answer checks, forms, polling and redaction."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from retouch.sdk import (
    JobContext,
    Progress,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    Secret,
)
from retouch.sdk.http import (
    Done,
    FilePart,
    FormValue,
    HttpClient,
    HttpConfig,
    HttpRuntime,
    Polled,
    Response,
    RetryPolicy,
    bearer,
)
from retouch.sdk.testing import FakeHttpServer, ManualClock, Reply

KEY = Secret("sk-test-abcdef0123456789")


@pytest.fixture
async def api() -> AsyncIterator[FakeHttpServer]:
    async with FakeHttpServer() as server:
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(api: FakeHttpServer, clock: ManualClock) -> AsyncIterator[HttpClient]:
    config = HttpConfig(api.url, read_timeout=0.2, retry=RetryPolicy(attempts=3))
    runtime = HttpRuntime(clock=clock, sleep=clock.sleep, random=lambda: 1.0)
    async with HttpClient(
        "acme", config, headers={"Authorization": bearer(KEY)}, runtime=runtime
    ) as http:
        yield http


def job(clock: ManualClock, timeout: float | None = 60.0) -> JobContext:
    deadline = None if timeout is None else clock.monotonic() + timeout
    return JobContext("job_1", deadline=deadline, clock=clock)


async def test_a_json_call_sends_auth_trace_headers_and_the_body(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock
) -> None:
    api.queue("POST", "/v1/things", Reply.json({"id": "t1", "n": 3}))
    context = JobContext(
        "job_9", trace_headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    )
    response = await client.post_json("/v1/things", {"x": 1}, context=context)

    assert response.pick("id", str) == "t1"
    assert response.pick("n", float) == 3.0
    [sent] = api.requests
    assert sent.bearer == KEY.reveal()
    assert sent.headers["traceparent"] == context.trace_headers["traceparent"]
    assert sent.json() == {"x": 1}
    assert sent.headers["User-Agent"] == "retouch"


async def test_no_time_left_fails_before_anything_is_sent(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock
) -> None:
    context = job(clock, timeout=1.0)
    clock.advance(2.0)
    with pytest.raises(ProviderTimeout, match="deadline passed"):
        await client.get_json("/x", context=context)
    assert api.requests == []


async def test_backoff_never_sleeps_past_the_deadline(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock
) -> None:
    # random() = 1: the first wait is the full 0.5 s, more than the 0.4 s left.
    api.queue("GET", "/x", Reply.error(503), Reply.json({}))
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        await client.get_json("/x", context=job(clock, timeout=0.4))
    assert clock.sleeps == []


async def test_a_retry_after_longer_than_the_cap_is_raised_at_once(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock
) -> None:
    api.queue("GET", "/x", Reply.error(429, headers={"Retry-After": "3600"}))
    with pytest.raises(ProviderRateLimited) as caught:
        await client.get_json("/x", context=job(clock, timeout=None))
    assert caught.value.retry_after == 3600.0
    assert clock.sleeps == []


async def test_503_retry_after_is_honoured_too(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock
) -> None:
    api.queue("GET", "/x", Reply.error(503, headers={"Retry-After": "4"}), Reply.json({}))
    await client.get_json("/x", context=job(clock))
    assert clock.sleeps == [4.0]


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (400, ProviderRejected, "refused the request (HTTP 400)"),
        (422, ProviderRejected, "HTTP 422"),
        (401, ProviderUnavailable, "refused our credentials"),
        (403, ProviderUnavailable, "refused our credentials"),
        (404, ProviderUnavailable, "check the provider's base_url"),
        (504, ProviderTimeout, "timed out (HTTP 504"),
    ],
)
async def test_statuses_map_to_what_the_server_should_do(
    api: FakeHttpServer,
    client: HttpClient,
    clock: ManualClock,
    status: int,
    error: type[ProviderError],
    words: str,
) -> None:
    api.queue("GET", "/x", *[Reply.error(status, error="nope")] * 3)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")) as caught:
        await client.get_json("/x", context=job(clock))
    assert "acme" in caught.value.message
    if status < 500:
        assert len(api.requests) == 1, "a 4xx is not retried"


async def test_a_classifier_sees_error_answers_first(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock
) -> None:
    def content_filter(response: Response) -> ProviderError | None:
        if response.status == 403 and b"filtered" in response.body:
            return ProviderRejected("the prompt was filtered", field="params.prompt")
        return None

    api.queue("GET", "/x", Reply.error(403, error="filtered"))
    with pytest.raises(ProviderRejected, match="filtered") as caught:
        await client.get_json("/x", context=job(clock), classify=content_filter)
    assert caught.value.field == "params.prompt"


async def test_retry_false_sends_once(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock
) -> None:
    api.queue("POST", "/x", Reply.error(503), Reply.json({}))
    with pytest.raises(ProviderUnavailable):
        await client.request("POST", "/x", context=job(clock), json={}, retry=False)
    assert len(api.requests) == 1


async def test_missing_and_mistyped_fields_are_named(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock
) -> None:
    api.queue("GET", "/x", Reply.json({"output": [{"url": 5}]}))
    response = await client.get_json("/x", context=job(clock))
    with pytest.raises(ProviderBadResponse, match=r"a int in field 'output\.0\.url' where a str"):
        response.pick("output.0.url", str)
    with pytest.raises(ProviderBadResponse, match=r"no 'output\.1\.url' field"):
        response.pick("output.1.url", str)
    assert response.pick("status", str, "unknown") == "unknown"
    with pytest.raises(ProviderBadResponse, match="a JSON list, not an object"):
        Response("acme", "GET /x", 200, response.headers, b"[]", response.url).json_object()


async def test_a_multipart_form_is_rebuilt_for_each_attempt(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock
) -> None:
    api.queue("POST", "/edit", Reply.error(502), Reply.json({"ok": True}))
    form: dict[str, FormValue] = {
        "prompt": "a cat",
        "image": FilePart(b"\x89PNG-bytes", "image.png", "image/png"),
    }
    await client.request("POST", "/edit", context=job(clock), form=form, expect="application/json")

    first, second = api.requests
    assert first.form()["prompt"].text == "a cat", "the first attempt sent the whole form"
    fields = second.form()
    assert fields["prompt"].text == "a cat"
    assert fields["image"].data == b"\x89PNG-bytes"
    assert fields["image"].filename == "image.png"
    assert fields["image"].content_type == "image/png"


async def test_poll_yields_monotonic_progress_then_the_value(
    client: HttpClient, clock: ManualClock
) -> None:
    states = iter(
        [
            Polled[str](fraction=0.2, stage="queued"),
            Polled[str](fraction=0.1, stage="running"),
            Polled[str](fraction=0.6, stage="running"),
            Polled[str](value="done!"),
        ]
    )

    async def check() -> Polled[str]:
        return next(states)

    seen = [item async for item in client.poll(check, context=job(clock), interval=1.0)]
    assert seen[:-1] == [
        Progress(0.2, "queued"),
        Progress(0.2, "running"),
        Progress(0.6, "running"),
    ]
    assert seen[-1] == Done("done!")
    assert clock.sleeps == [1.0, 1.5, 2.25]


async def test_poll_gives_up_at_the_deadline(client: HttpClient, clock: ManualClock) -> None:
    checks = 0

    async def never_done() -> Polled[str]:
        nonlocal checks
        checks += 1
        return Polled()

    with pytest.raises(ProviderTimeout, match="before its deadline"):
        async for _ in client.poll(never_done, context=job(clock, timeout=3.0), interval=1.0):
            pass
    assert sum(clock.sleeps) == pytest.approx(3.0)
    assert checks == 4


async def test_secrets_stay_out_of_errors_and_log_lines(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    echo = f"invalid token {KEY.reveal()}"
    api.queue("GET", "/x", Reply.error(500, error=echo), Reply.error(500, error=echo))
    api.queue("GET", "/x", Reply.error(500, error=echo))
    with (
        caplog.at_level(logging.INFO, logger="retouch.sdk.http"),
        pytest.raises(ProviderUnavailable) as caught,
    ):
        await client.get_json("/x", context=job(clock))
    assert KEY.reveal() not in caught.value.message
    assert "invalid token ***" in caught.value.message
    assert caplog.records, "the retries were logged"
    assert all(KEY.reveal() not in record.getMessage() for record in caplog.records)


async def test_an_unrouted_fake_path_answers_404(
    api: FakeHttpServer, client: HttpClient, clock: ManualClock
) -> None:
    with pytest.raises(ProviderUnavailable, match="HTTP 404"):
        await client.get_json("/nowhere", context=job(clock))
    assert api.requests_to("GET", "/nowhere")
