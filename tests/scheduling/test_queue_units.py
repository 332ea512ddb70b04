"""Over gRPC: on a provider that weighs jobs by their pixels, small jobs run two to a
slot, a large one waits for a whole slot without being overtaken, and the queue's
positions and refusals count jobs by their size."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from retouch.server.clock import ManualClock
from retouch.server.scheduling import QueueLimits
from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, photo, png, rpc_details

from .gated import GatedProvider
from .test_queue import PLAN, SUBJECT, Stream, has_positions

SMALL = (64, 64)
LARGE = (128, 128)


def _provider() -> GatedProvider:
    """One slot: two jobs of up to 64x64 at once, or one larger."""
    return GatedProvider(capacity=1, small_job_pixels=SMALL[0] * SMALL[1])


@pytest.fixture
async def weighed(harness: Callable[..., Any]) -> AsyncIterator[Any]:
    async with harness(plans=[PLAN], providers=[_provider()], clock=ManualClock()) as h:
        yield h


async def start(h: Any, size: tuple[int, int]) -> Stream:
    request = pb.EnhanceRequest(
        image=common_pb2.ImageInput(data=png(photo(size))), kind=pb.ENHANCE_KIND_DENOISE
    )
    stream = Stream(h.edit.Enhance(request, metadata=metadata(subject=SUBJECT)))
    await stream.until(lambda s: bool(s.events))
    return stream


async def queued_at(h: Any, stream: Stream) -> int:
    job = await h.edit.GetJob(
        pb.GetJobRequest(job_id=stream.job_id), metadata=metadata(subject=SUBJECT)
    )
    assert job.state == pb.JOB_STATE_QUEUED
    return int(job.queue_position)


def completed(stream: Stream) -> bool:
    return any(event.HasField("completed") for event in stream.events)


async def test_small_jobs_share_a_slot_and_a_large_one_waits_for_it_whole(
    weighed: Any,
) -> None:
    provider: GatedProvider = weighed.fakes["gated"]
    small = [await start(weighed, SMALL) for _ in range(2)]
    await provider.until_started(2)  # both at once, in the one slot
    large = await start(weighed, LARGE)
    behind = await start(weighed, SMALL)
    await large.until(has_positions([0]))
    await behind.until(has_positions([1]))

    provider.finish_one()
    await small[0].until(completed)
    # Half the slot is free: enough for the small job, but it waits behind the large.
    assert (await queued_at(weighed, large), await queued_at(weighed, behind)) == (0, 1)
    assert len(provider.started) == 2

    provider.finish_one()
    await provider.until_started(3)
    assert provider.started[2] == large.job_id
    await behind.until(has_positions([1, 0]))
    assert await queued_at(weighed, behind) == 0

    provider.finish_one()
    await provider.until_started(4)
    assert provider.started[3] == behind.job_id
    provider.finish_one()
    await asyncio.gather(*(stream.task for stream in [*small, large, behind]))
    assert provider.most_in_flight == 2


async def test_a_full_queue_refuses_a_large_job_while_a_small_one_still_fits(
    harness: Callable[..., Any],
) -> None:
    provider = _provider()
    limits = {"gated": QueueLimits(max_queue=0)}
    async with harness(plans=[PLAN], providers=[provider], queue_limits=limits) as h:
        first = await start(h, SMALL)
        await provider.until_started(1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in h.edit.Enhance(
                pb.EnhanceRequest(
                    image=common_pb2.ImageInput(data=png(photo(LARGE))),
                    kind=pb.ENHANCE_KIND_DENOISE,
                ),
                metadata=metadata(subject=SUBJECT),
            ):
                pass
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry = [
            d for d in rpc_details(refused.value) if isinstance(d, error_details_pb2.RetryInfo)
        ]
        assert len(retry) == 1
        assert retry[0].retry_delay.ToTimedelta().total_seconds() > 0
        second = await start(h, SMALL)  # the other half of the slot
        await provider.until_started(2)
        provider.finish_one()
        provider.finish_one()
        await asyncio.gather(first.task, second.task)
