"""The real Replicate and Workers AI plugins behind the gRPC server in ``staging``: found
through their entry points, their keys read from the environment, each talking to a
local fake of its API that repaints every pixel. Unmasked pixels come back exact, the
caller's bytes reach the API unchanged, the ledger commits the actual cost (Replicate's
prediction seconds; Workers AI's flat price) and refunds the rest, and a prediction the
safety checker refused is refunded in full."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from retouch.sdk.testing import FakeHttpServer
from tests.e2e.test_hosted_plugins import hosted
from tests.e2e.test_resilience import assert_unmasked_pixels_are_the_inputs, inline
from tests.policy.test_money import IMAGE, SUBJECT, outcome
from tests.providers.fake_replicate import CREATE, DELIVERY_HOST, FakeReplicate
from tests.providers.fake_workers_ai import ACCOUNT_ID, FakeWorkersAI
from tests.providers.hosted import API_KEY


@pytest.fixture
async def api() -> AsyncIterator[FakeHttpServer]:
    async with FakeHttpServer() as server:
        yield server


def replicate_table(fake: FakeReplicate) -> dict[str, object]:
    return {
        "base_url": fake.base_url,
        "download_http": True,
        "download_hosts": [DELIVERY_HOST],
        "download_allow_networks": ["127.0.0.1/32", "::1/128"],
    }


async def test_replicate_charges_the_prediction_seconds_and_keeps_unmasked_pixels(
    harness: Any, api: FakeHttpServer
) -> None:
    fake = FakeReplicate(api, token=API_KEY, sync=False, steps=2)
    async with hosted(harness, "replicate", replicate_table(fake)) as h:
        events = await outcome(h.edit, inline())
        assert isinstance(events, list), events
        assert events[0].accepted.routing.chosen == "replicate"
        completed = events[-1].completed
        # 1 credit a job + 1 a second of the fake's 2.5 s of predict_time, rounded up;
        # the 30 credits reserved for metered time are refunded.
        assert completed.cost_credits == 4
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved) == (96, 0)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")
        assert_unmasked_pixels_are_the_inputs(completed.data)
        assert any(e.HasField("progress") for e in events)
    (create,) = api.requests_to("POST", CREATE)
    assert create.bearer == API_KEY
    image = create.json()["input"]["image"]
    assert image == "data:image/png;base64," + base64.b64encode(IMAGE).decode()


async def test_a_prediction_the_safety_checker_refused_is_refunded(
    harness: Any, api: FakeHttpServer
) -> None:
    fake = FakeReplicate(api, token=API_KEY, fail_with="NSFW content detected.")
    async with hosted(harness, "replicate", replicate_table(fake)) as h:
        failed = await outcome(h.edit, inline())
        assert isinstance(failed, aio.AioRpcError)
        assert failed.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "safety checker" in (failed.details() or "")
        assert API_KEY not in (failed.details() or "")
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved) == (100, 0)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")


async def test_workers_ai_charges_its_price_and_keeps_unmasked_pixels(
    harness: Any, api: FakeHttpServer
) -> None:
    fake = FakeWorkersAI(api, token=API_KEY)
    table: dict[str, object] = {"base_url": fake.base_url, "account_id": ACCOUNT_ID}
    async with hosted(harness, "workers-ai", table) as h:
        events = await outcome(h.edit, inline())
        assert isinstance(events, list), events
        assert events[0].accepted.routing.chosen == "workers-ai"
        completed = events[-1].completed
        assert completed.cost_credits == 2
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved) == (98, 0)
        assert_unmasked_pixels_are_the_inputs(completed.data)
    (job,) = fake.jobs
    assert bytes(job.body["image"]) == IMAGE
