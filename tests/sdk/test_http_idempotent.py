"""Calls that create something upstream (``idempotent=False``) are retried only when
they certainly did not arrive."""

from __future__ import annotations

import socket

import pytest

from retouch.sdk import ProviderRateLimited, ProviderUnavailable
from retouch.sdk.http import HttpClient, HttpConfig, HttpRuntime
from retouch.sdk.testing import FakeHttpServer, ManualClock, Reply


def client(base_url: str, clock: ManualClock) -> HttpClient:
    runtime = HttpRuntime(clock=clock, sleep=clock.sleep, random=lambda: 0.5)
    return HttpClient("demo", HttpConfig(base_url=base_url), runtime=runtime)


@pytest.mark.parametrize("fault", [Reply.error(500), Reply.error(503), Reply.reset()])
async def test_an_answer_that_may_follow_a_creation_is_not_retried(fault: Reply) -> None:
    clock = ManualClock()
    async with FakeHttpServer() as api, client(api.url, clock) as http:
        api.queue("POST", "/jobs", fault, Reply.json({"id": "second"}))
        with pytest.raises(ProviderUnavailable):
            await http.post_json("jobs", {}, context=None, idempotent=False)
        assert len(api.requests_to("POST", "/jobs")) == 1
        # The same fault on an idempotent call is retried.
        api.queue("POST", "/again", fault, Reply.json({"id": "x"}))
        await http.post_json("again", {}, context=None)
        assert len(api.requests_to("POST", "/again")) == 2


async def test_a_429_is_retried_since_nothing_was_created() -> None:
    clock = ManualClock()
    async with FakeHttpServer() as api, client(api.url, clock) as http:
        api.queue("POST", "/jobs", *[Reply.error(429, headers={"Retry-After": "2"})] * 3)
        with pytest.raises(ProviderRateLimited):
            await http.post_json("jobs", {}, context=None, idempotent=False)
        assert len(api.requests_to("POST", "/jobs")) == 3
        assert clock.sleeps == [2.0, 2.0]


async def test_a_connection_that_could_not_be_made_is_retried() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    clock = ManualClock()
    async with client(f"http://127.0.0.1:{port}", clock) as http:
        with pytest.raises(ProviderUnavailable, match="after 3 attempts"):
            await http.post_json("jobs", {}, context=None, idempotent=False)
    assert clock.sleeps == [0.25, 0.5]
