"""Jobs beyond a provider's capacity wait in a fair queue, told their place."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from retouch.server.clock import ManualClock
from retouch.server.policy import Plan
from retouch.server.scheduling import QueueLimits
from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.conftest import OTHER_KEY
from tests.helpers import metadata, photo, png, rpc_details

from .gated import GatedProvider

PLAN = Plan(name="metered", rate_per_s=1000.0, burst=1000, monthly_jobs=1000)


def denoise(**fields: Any) -> pb.EnhanceRequest:
    return pb.EnhanceRequest(
        image=common_pb2.ImageInput(data=png(photo((64, 64)))),
        kind=pb.ENHANCE_KIND_DENOISE,
        **fields,
    )


class Stream:
    """One job's event stream, read by a task of its own."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.events: list[pb.JobEvent] = []
        self.ended = False
        self._changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self.call:
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self.ended = True
                self._changed.notify_all()

    @property
    def job_id(self) -> str:
        return self.events[0].job_id

    def positions(self) -> list[int]:
        return [
            e.progress.queue_position
            for e in self.events
            if e.HasField("progress") and e.progress.stage == "queued"
        ]

    async def until(self, test: Callable[[Stream], bool]) -> None:
        """Wait until ``test`` holds; fails if the stream ends first."""
        async with self._changed:
            await self._changed.wait_for(lambda: test(self) or self.ended)
        assert test(self), f"the stream ended first, after {len(self.events)} event(s)"


class Decodes:
    """Counts the server's image decodes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from retouch.server import edits
        from retouch.server.imaging import decode_image

        self.count = 0
        real = decode_image

        def counting(data: bytes, **kwargs: Any) -> Any:
            self.count += 1
            return real(data, **kwargs)

        monkeypatch.setattr(edits, "decode_image", counting)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Decodes:
    return Decodes(monkeypatch)


@pytest.fixture
async def gated(harness: Callable[..., Any]) -> AsyncIterator[Any]:
    provider = GatedProvider()
    clock = ManualClock()
    async with harness(plans=[PLAN], providers=[provider], clock=clock) as h:
        h.clock = clock
        yield h


SUBJECT = "user:ada"


async def start(h: Any, key: str | None = None, subject: str = SUBJECT) -> Stream:
    call_metadata = metadata(subject=subject) if key is None else metadata(key, subject)
    stream = Stream(h.edit.Enhance(denoise(), metadata=call_metadata))
    await stream.until(lambda s: bool(s.events))
    return stream


def has_positions(seen: list[int]) -> Callable[[Stream], bool]:
    return lambda stream: stream.positions() == seen


async def test_positions_count_down_then_the_job_runs(gated: Any, decodes: Decodes) -> None:
    provider: GatedProvider = gated.fakes["gated"]
    running = await start(gated)
    await provider.until_started(1)
    # It took the free slot: told it is at the head and starting now.
    await running.until(lambda s: s.positions() == [0])
    ahead = [await start(gated) for _ in range(3)]
    last = await start(gated)
    await last.until(lambda s: s.positions() == [3])
    assert decodes.count == 1  # waiting jobs hold only their encoded input
    job = await gated.edit.GetJob(
        pb.GetJobRequest(job_id=last.job_id), metadata=metadata(subject=SUBJECT)
    )
    assert job.state == pb.JOB_STATE_QUEUED
    assert job.queue_position == 3
    for seen in ([3, 2], [3, 2, 1], [3, 2, 1, 0]):
        gated.clock.advance(10)
        provider.finish_one()
        await last.until(has_positions(seen))
    starts = [
        e.progress.estimated_start.ToSeconds() for e in last.events if e.progress.stage == "queued"
    ]
    assert all(start >= 1_800_000_000 for start in starts)
    assert last.job_id not in provider.started
    provider.finish_one()
    await provider.until_started(5)
    assert provider.started[-1] == last.job_id
    provider.finish_one()
    await asyncio.gather(running.task, *(s.task for s in ahead), last.task)
    assert last.events[-1].HasField("completed")
    assert provider.most_in_flight == 1
    assert decodes.count == 5  # once a job, when its slot came


async def test_one_tenants_burst_does_not_starve_anothers_single_job(gated: Any) -> None:
    provider: GatedProvider = gated.fakes["gated"]
    burst = [await start(gated) for _ in range(50)]
    await provider.until_started(1)
    single = await start(gated, OTHER_KEY)
    await single.until(lambda s: bool(s.positions()))
    provider.finish_one()
    await provider.until_started(2)
    provider.finish_one()
    await provider.until_started(3)
    assert single.job_id in provider.started[:3]
    for stream in burst:
        stream.call.cancel()
    provider.finish_one()
    await single.task


async def test_within_a_tenant_one_subjects_burst_does_not_starve_anothers_job(
    gated: Any,
) -> None:
    provider: GatedProvider = gated.fakes["gated"]
    burst = [await start(gated) for _ in range(10)]
    await provider.until_started(1)
    single = await start(gated, subject="user:bob")
    await single.until(lambda s: bool(s.positions()))
    provider.finish_one()
    await provider.until_started(2)
    provider.finish_one()
    await provider.until_started(3)
    assert single.job_id in provider.started[:3]
    for stream in burst:
        stream.call.cancel()
    provider.finish_one()
    await single.task


async def test_a_full_queue_refuses_with_retry_info_and_holds_nothing(
    harness: Callable[..., Any],
) -> None:
    provider = GatedProvider()
    limits = {"gated": QueueLimits(max_queue=1)}
    async with harness(plans=[PLAN], providers=[provider], queue_limits=limits) as h:
        usage_before = await h.usage(SUBJECT)
        running = await start(h)
        await provider.until_started(1)
        waiting = await start(h)
        await waiting.until(lambda s: s.positions() == [0])
        usage_queued = await h.usage(SUBJECT)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in h.edit.Enhance(denoise(), metadata=metadata(subject=SUBJECT)):
                pass
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = rpc_details(refused.value)
        retry = [d for d in details if isinstance(d, error_details_pb2.RetryInfo)]
        quota = [d for d in details if isinstance(d, error_details_pb2.QuotaFailure)]
        assert len(retry) == 1
        assert retry[0].retry_delay.ToTimedelta().total_seconds() > 0
        assert len(quota) == 1
        assert quota[0].violations[0].subject == "provider:gated"
        assert (await h.usage(SUBJECT)).quota_used == usage_queued.quota_used
        assert usage_queued.quota_used == usage_before.quota_used + 2
        provider.finish_one()
        provider.finish_one()
        await asyncio.gather(running.task, waiting.task)


async def test_a_job_cancelled_while_queued_is_refunded_and_never_decoded(
    gated: Any, decodes: Decodes
) -> None:
    provider: GatedProvider = gated.fakes["gated"]
    before = await gated.usage(SUBJECT)
    running = await start(gated)
    await provider.until_started(1)
    waiting = await start(gated)
    await waiting.until(lambda s: s.positions() == [0])
    cancelled = await gated.edit.CancelJob(
        pb.CancelJobRequest(job_id=waiting.job_id), metadata=metadata(subject=SUBJECT)
    )
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await waiting.task
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    provider.finish_one()
    await running.task
    after = await gated.usage(SUBJECT)
    assert after.quota_used - before.quota_used == 1  # the job that ran, only
    assert waiting.job_id not in provider.started
    assert decodes.count == 1  # the running job's


def corrupt_pixels() -> bytes:
    """A PNG whose header and chunk layout are intact but whose image data is not."""
    whole = png(photo((64, 64)))
    middle = len(whole) // 2
    return (
        whole[:middle] + bytes(b ^ 0xFF for b in whole[middle : middle + 64]) + whole[middle + 64 :]
    )


async def test_a_queued_job_whose_pixels_are_corrupt_fails_when_its_turn_comes_and_is_refunded(
    gated: Any,
) -> None:
    provider: GatedProvider = gated.fakes["gated"]
    before = await gated.usage(SUBJECT)
    running = await start(gated)
    await provider.until_started(1)
    request = pb.EnhanceRequest(
        image=common_pb2.ImageInput(data=corrupt_pixels()), kind=pb.ENHANCE_KIND_DENOISE
    )
    waiting = Stream(gated.edit.Enhance(request, metadata=metadata(subject=SUBJECT)))
    await waiting.until(lambda s: s.positions() == [0])
    provider.finish_one()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await waiting.task
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated or corrupt" in (failed.value.details() or "")
    await running.task
    after = await gated.usage(SUBJECT)
    assert after.quota_used - before.quota_used == 1
    assert len(provider.started) == 1


async def test_corrupt_pixels_with_a_free_slot_are_refused_before_anything_is_held(
    gated: Any,
) -> None:
    before = await gated.usage(SUBJECT)
    request = pb.EnhanceRequest(
        image=common_pb2.ImageInput(data=corrupt_pixels()), kind=pb.ENHANCE_KIND_DENOISE
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in gated.edit.Enhance(request, metadata=metadata(subject=SUBJECT)):
            pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await gated.usage(SUBJECT)).quota_used == before.quota_used
    # The slot it took while decoding went back: the next job runs at once.
    provider: GatedProvider = gated.fakes["gated"]
    stream = await start(gated)
    await provider.until_started(1)
    provider.finish_one()
    await stream.task


async def test_a_full_queue_sends_the_job_to_another_capable_provider(
    harness: Callable[..., Any],
) -> None:
    cheap, spare = GatedProvider("cheap"), GatedProvider("spare", credits_per_job=5)
    limits = {"cheap": QueueLimits(max_queue=0)}
    async with harness(plans=[PLAN], providers=[cheap, spare], queue_limits=limits) as h:
        first = await start(h)
        await cheap.until_started(1)
        second = await start(h)
        accepted = second.events[0].accepted
        assert accepted.provider == "spare"
        assert any("'cheap' is at capacity" in note for note in accepted.routing.notes)
        await spare.until_started(1)
        cheap.finish_one()
        spare.finish_one()
        await asyncio.gather(first.task, second.task)
