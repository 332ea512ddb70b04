"""Decoding runs off the event loop by the pixels it makes, not the bytes it reads: a
flat image and a mask compress to a few kilobytes, yet decoding and feathering a
megapixel of them would hold every other stream for milliseconds."""

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
from tests.helpers import metadata, png, read_all, square_mask

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
