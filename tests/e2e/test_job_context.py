"""What the server hands a provider with each job (its JobContext), and the actual
cost it charges when a provider reports usage."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import pytest

from retouch.sdk import CostModel, EditRequest, Event, JobContext, Result, Usage
from retouch.sdk.testing import FakeProvider
from retouch.server.edits import SourceFiles
from retouch.server.jobs.context import InputLinks
from retouch.server.policy import Plan
from retouch.server.storage import MemoryObjectStore
from retouch.v1 import common_pb2, image_edit_pb2
from tests.helpers import metadata
from tests.policy.test_money import IMAGE, MASK, SUBJECT, grant, inpaint, outcome

PAID = Plan("paid", credits=True, rate_per_s=1000, burst=1000)


class MeteredFake(FakeProvider):
    """A FakeProvider whose results report ``usage``."""

    def __init__(self, usage: Usage, cost: CostModel) -> None:
        super().__init__("metered", cost=cost)
        self.usage = usage

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        async for event in super().run(request, context):
            if isinstance(event, Result):
                yield Result(event.image, event.metadata, self.usage)
            else:
                yield event


async def test_the_provider_gets_the_job_id_deadline_and_original_bytes(harness: Any) -> None:
    fake = FakeProvider("fake")
    async with harness(plans=[PAID], providers=[fake]) as h:
        await grant(h.account, 10)
        events = await outcome(h.edit, inpaint())
    assert isinstance(events, list)
    [context] = fake.contexts
    assert context.job_id == events[0].job_id
    assert context.deadline is not None
    left = context.time_left()
    assert left is not None
    assert left > 0
    assert context.image is not None
    assert context.image.data == IMAGE
    assert context.image.content_type == "image/png"
    assert context.mask is not None
    assert context.mask.data == MASK, "a binary white-replaces mask is forwarded as sent"
    assert (context.image_url, context.mask_url) == (None, None), "the file store cannot presign"


async def test_a_mask_the_server_changed_is_not_forwarded(harness: Any) -> None:
    fake = FakeProvider("fake")
    request = inpaint(mask_options=image_edit_pb2.MaskOptions(invert=True))
    async with harness(plans=[PAID], providers=[fake]) as h:
        await grant(h.account, 10)
        events = await outcome(h.edit, request)
    assert isinstance(events, list)
    [context] = fake.contexts
    assert context.mask is None
    assert context.image is not None


async def test_reported_usage_is_charged_and_the_rest_of_the_hold_refunded(
    harness: Any,
) -> None:
    cost = CostModel(credits_per_job=1, credits_per_provider_credit=1.0, metered_reserve=5)
    metered = MeteredFake(Usage(provider_credits=2.0), cost)
    async with harness(plans=[PAID], providers=[metered]) as h:
        await grant(h.account, 10)
        events = await outcome(h.edit, inpaint())
        assert isinstance(events, list)
        assert events[0].accepted.estimated_cost_credits == 6
        assert events[-1].completed.cost_credits == 3
        usage = await h.usage(SUBJECT)
        assert (usage.credits_balance, usage.credits_reserved) == (7, 0)
        assert await h.server.ledger.audit(f"dev/{SUBJECT}")


async def test_usage_costing_more_than_the_hold_is_charged_the_hold_and_logged(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cost = CostModel(credits_per_job=1, credits_per_provider_credit=1.0, metered_reserve=5)
    metered = MeteredFake(Usage(provider_credits=50.0), cost)
    async with harness(plans=[PAID], providers=[metered]) as h:
        await grant(h.account, 10)
        with caplog.at_level(logging.WARNING, logger="retouch.server.jobs.context"):
            events = await outcome(h.edit, inpaint())
        assert isinstance(events, list)
        assert events[-1].completed.cost_credits == 6
        usage = await h.usage(SUBJECT)
        assert usage.credits_balance == 4
    assert any("more than the 6 estimated" in r.getMessage() for r in caplog.records)


class PresigningStore(MemoryObjectStore):
    """A memory store that can presign, as S3 does."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.asked: list[tuple[str, int]] = []

    async def presigned_url(self, key: str, expires_s: int) -> str:
        self.asked.append((key, expires_s))
        if self.fail:
            raise RuntimeError("signing service down")
        return f"https://store.example/{key}?sig=1"


async def test_input_links_come_from_a_store_that_presigns() -> None:
    store = PresigningStore()
    links = InputLinks(store, ttl_s=600)
    sources = SourceFiles(None, image_key="uploads/a.png", mask_key=None)
    assert links.available
    assert await links.for_sources(sources) == ("https://store.example/uploads/a.png?sig=1", None)
    assert store.asked == [("uploads/a.png", 600)]


async def test_no_links_without_presigning_or_when_signing_fails() -> None:
    sources = SourceFiles(None, image_key="uploads/a.png", mask_key="uploads/m.png")
    plain = InputLinks(MemoryObjectStore())
    assert not plain.available
    assert await plain.for_sources(sources) == (None, None)
    assert await InputLinks(PresigningStore(fail=True)).for_sources(sources) == (None, None)


async def test_an_uploaded_input_on_s3_reaches_the_provider_as_a_presigned_url(
    harness: Any, s3_url: str
) -> None:
    fake = FakeProvider("fake")
    async with harness(plans=[PAID], providers=[fake], object_store=s3_url) as h:
        await grant(h.account, 10)
        upload = await h.edit.Upload(chunks(IMAGE), metadata=metadata(subject=SUBJECT))
        request = image_edit_pb2.InpaintRequest(
            image=common_pb2.ImageInput(upload_id=upload.upload_id),
            mask=common_pb2.ImageInput(data=MASK),
        )
        events = await outcome(h.edit, request)
        assert isinstance(events, list)
        [context] = fake.contexts
        assert context.image_url is not None
        assert context.mask_url is None, "an inline mask has no object to link to"
        async with aiohttp.ClientSession() as session, session.get(context.image_url) as got:
            assert got.status == 200
            assert await got.read() == IMAGE


async def chunks(data: bytes) -> AsyncIterator[image_edit_pb2.UploadChunk]:
    yield image_edit_pb2.UploadChunk(data=data, content_type="image/png")
