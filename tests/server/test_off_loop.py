"""Decoding runs off the event loop by the pixels it makes, not the bytes it reads: a
flat image and a mask compress to a few kilobytes, yet decoding and feathering a
megapixel of them would hold every other stream for milliseconds. What is decoded
before a job holds its provider's slot (its mask) is still decoded one job at a time,
as it was on the loop, so memory stays bounded in a burst."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from retouch.sdk import Operation
from retouch.sdk.testing import FakeProvider
from retouch.server.policy import Plan
from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, png, read_all, read_one, square_mask

T = TypeVar("T")
PLAN = Plan("free", rate_per_s=1000, burst=1000)


@pytest.mark.parametrize(("side", "off_loop"), [(1024, True), (64, False)])
async def test_a_flat_image_and_its_mask_decode_off_the_loop_once_they_are_large(
    harness: Any, monkeypatch: pytest.MonkeyPatch, side: int, off_loop: bool
) -> None:
    image = png(np.full((side, side, 3), 120, np.uint8))
    mask = png(square_mask((side, side), (side // 4, side // 4, side // 2, side // 2)))
    assert len(image) < 32 * 1024
    assert len(mask) < 32 * 1024
    in_threads: list[str] = []
    to_thread = asyncio.to_thread

    async def recorded(work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        in_threads.append(work.__qualname__)
        return await to_thread(work, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", recorded)
    fake = FakeProvider("fake", [Operation.INPAINT])
    async with harness(plans=[PLAN], providers=[fake]) as h:
        events = await read_all(
            h.edit.Inpaint(
                pb.InpaintRequest(
                    image=common_pb2.ImageInput(data=image),
                    mask=common_pb2.ImageInput(data=mask),
                ),
                metadata=metadata(),
            )
        )
    assert events[-1].HasField("completed")
    decoding = {
        name
        for name in in_threads
        if name.startswith(("EditPreparer._decode.", "EditPreparer._prepare_mask."))
    }
    expected = (
        {"EditPreparer._decode.<locals>.<lambda>", "EditPreparer._prepare_mask.<locals>.prepare"}
        if off_loop
        else set()
    )
    assert decoding == expected


async def test_a_burst_prepares_its_masks_one_job_at_a_time(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = 1024
    image = png(np.full((side, side, 3), 120, np.uint8))
    mask = png(square_mask((side, side), (side // 4, side // 4, side // 2, side // 2)))
    preparing = 0
    most_at_once = 0
    to_thread = asyncio.to_thread

    async def overlapping(work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        nonlocal preparing, most_at_once
        if not work.__qualname__.startswith("EditPreparer._prepare_mask."):
            return await to_thread(work, *args, **kwargs)
        preparing += 1
        most_at_once = max(most_at_once, preparing)
        try:
            for _ in range(10):  # let every other submission reach this point if it can
                await asyncio.sleep(0)
            return await to_thread(work, *args, **kwargs)
        finally:
            preparing -= 1

    monkeypatch.setattr(asyncio, "to_thread", overlapping)
    release = asyncio.Event()
    fake = FakeProvider("fake", [Operation.INPAINT], release=release)
    async with harness(plans=[PLAN], providers=[fake]) as h:
        calls = [
            h.edit.Inpaint(
                pb.InpaintRequest(
                    image=common_pb2.ImageInput(data=image),
                    mask=common_pb2.ImageInput(data=mask),
                ),
                metadata=metadata(),
            )
            for _ in range(6)
        ]
        accepted = await asyncio.gather(*(read_one(call) for call in calls))
        assert all(event.HasField("accepted") for event in accepted)
        assert most_at_once == 1
        release.set()
        ended = await asyncio.gather(*(read_all(call) for call in calls))
    assert all(events[-1].HasField("completed") for events in ended)
