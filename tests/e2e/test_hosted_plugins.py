"""The real Stability and OpenAI plugins behind the gRPC server in ``staging``: found
through their entry points, their keys read from the environment, each talking to a
local fake of its API. Unmasked pixels come back exact, the caller's bytes reach the
API unchanged, the ledger commits the cost the API reported (the rest of the
reservation refunded), and a moderation refusal is refunded in full."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from typing import Any

import grpc
import numpy as np
import pytest
from grpc import aio

from retouch.sdk import ENTRY_POINT_GROUP, composite
from retouch.sdk.testing import FakeHttpServer
from retouch.server.imaging import prepare_mask
from retouch.server.registry import ProviderRegistry
from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.e2e.test_resilience import PAID, assert_unmasked_pixels_are_the_inputs, inline
from tests.helpers import decode_png
from tests.policy.test_money import IMAGE, MASK, SUBJECT, grant, inpaint, outcome
from tests.providers.hosted import API_KEY
from tests.providers.openai_api import FakeOpenAI
from tests.providers.stability_api import FakeStability

KEY_VARIABLE = "RETOUCH_E2E_HOSTED_KEY"


@asynccontextmanager
async def hosted(
    harness: Callable[..., Any], name: str, table: dict[str, object]
) -> AsyncIterator[Any]:
    """A staging server whose only provider is the installed plugin ``name``."""
    registry = await ProviderRegistry.discover(
        configs={name: {"api_key_env": KEY_VARIABLE, **table}},
        environ={KEY_VARIABLE: API_KEY},
        entries=[e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == name],
    )
    assert registry.broken == {}
    async with harness(plans=[PAID], providers=[], environment="staging", registry=registry) as h:
        await grant(h.account, 100)
        yield h


@pytest.fixture
async def api() -> AsyncIterator[FakeHttpServer]:
    async with FakeHttpServer() as server:
        yield server


@pytest.mark.parametrize(
    ("name", "fake", "suffix", "credits"),
    # Erase is 3 Stability credits; the OpenAI fake bills $0.04537 of tokens.
    [("stability", FakeStability, "", 3), ("openai", FakeOpenAI, "/v1", 5)],
)
async def test_an_inpaint_charges_what_the_api_reported_and_keeps_unmasked_pixels(
    harness: Any,
    api: FakeHttpServer,
    name: str,
    fake: Callable[[FakeHttpServer], Any],
    suffix: str,
    credits: int,
) -> None:
    fake(api)
    async with hosted(harness, name, {"base_url": api.url + suffix}) as h:
        events = await outcome(h.edit, inline())
        assert isinstance(events, list), events
        assert events[0].accepted.routing.chosen == name
        completed = events[-1].completed
        assert completed.cost_credits == credits
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved) == (100 - credits, 0)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")
        assert_unmasked_pixels_are_the_inputs(completed.data)
    (sent,) = api.requests
    assert sent.bearer == API_KEY
    # The caller's PNG reached the API as it was sent: nothing re-encoded it.
    assert sent.form()["image"].data == IMAGE


async def test_a_feathered_mask_blends_the_hosted_answer_into_the_band_around_it(
    harness: Any, api: FakeHttpServer
) -> None:
    # The server composites hosted answers itself (JobContext.host_composites), with the
    # caller's feathered mask, so the band outside the mask mixes the vendor's pixels in.
    FakeStability(api)  # its erase answers 255 - input everywhere, at the input's size
    request = inpaint(
        output=common_pb2.OutputOptions(inline=True), mask_options=pb.MaskOptions(feather_px=4)
    )
    async with hosted(harness, "stability", {"base_url": api.url}) as h:
        events = await outcome(h.edit, request)
    assert isinstance(events, list), events
    original = decode_png(IMAGE)
    blend = prepare_mask(decode_png(MASK)[..., 0], invert=False, grow_px=0, feather_px=4).alpha
    assert ((blend > 0) & (blend < 255)).any()
    result = decode_png(events[-1].completed.data)
    np.testing.assert_array_equal(result, composite(original, 255 - original, blend))


async def test_a_content_filtered_result_is_refused_and_refunded(
    harness: Any, api: FakeHttpServer
) -> None:
    stability = FakeStability(api)
    stability.finish_reason = "CONTENT_FILTERED"
    async with hosted(harness, "stability", {"base_url": api.url}) as h:
        failed = await outcome(h.edit, inline())
        assert isinstance(failed, aio.AioRpcError)
        assert failed.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "moderation" in (failed.details() or "")
        assert API_KEY not in (failed.details() or "")
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved) == (100, 0)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")
