"""Previews over real gRPC: asked for with ``OutputOptions.previews``, small JPEGs, a few
per second at most on the server's clock, and only the latest for a reader behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from retouch.client.cli import main
from retouch.providers.patchmatch import PatchMatchProvider
from retouch.sdk import EditRequest, Event, JobContext, Progress, Result
from retouch.sdk.testing import FakeProvider
from retouch.server.clock import ManualClock
from retouch.server.config import DEV_API_KEY
from retouch.server.jobs.previews import PREVIEW_INTERVAL_S, PREVIEW_MAX_SIDE, PreviewGate
from retouch.server.policy import Plan
from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, photo, png, read_all, square_mask

PLAN = Plan("test", rate_per_s=1000, burst=1000)
SIZE = (400, 300)
IMAGE = png(photo(SIZE))
MASK = png(square_mask(SIZE, (150, 100, 230, 170)))


def inpaint(*, previews: bool, provider: str = "") -> pb.InpaintRequest:
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=IMAGE),
        mask=common_pb2.ImageInput(data=MASK),
        output=common_pb2.OutputOptions(previews=previews),
        provider=common_pb2.ProviderChoice(provider=provider),
    )


def decode_jpeg(data: bytes) -> NDArray[np.uint8]:
    assert data[:3] == b"\xff\xd8\xff", "not a JPEG"
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None, "the JPEG does not decode"
    return np.asarray(pixels, dtype=np.uint8)


def previews_of(events: list[pb.JobEvent]) -> list[bytes]:
    return [e.progress.preview for e in events if e.HasField("progress") and e.progress.preview]


class PreviewingProvider(FakeProvider):
    """Yields ``count`` previews (a distinct grey level each), moving ``clock`` on by
    ``step_s`` after each, then a progress event without one; then waits for ``go_on``
    and returns the fake's result. With ``after_first`` it waits for that event after its
    first preview, so a test can read it before the next one replaces it."""

    def __init__(
        self,
        clock: ManualClock,
        *,
        count: int,
        step_s: float,
        after_first: asyncio.Event | None = None,
    ) -> None:
        super().__init__("previewing", models=("previewing",))
        self.clock = clock
        self.count = count
        self.step_s = step_s
        self.all_yielded = asyncio.Event()
        self.go_on = asyncio.Event()
        self.after_first = after_first

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        for index in range(self.count):
            shade = np.full((600, 800, 3), index * 20, np.uint8)
            yield Progress((index + 1) / (self.count + 1), f"step {index}", preview=shade)
            self.clock.advance(self.step_s)
            if index == 0 and self.after_first is not None:
                await self.after_first.wait()
        # One more report, without a preview of its own.
        yield Progress(self.count / (self.count + 1), "after")
        self.all_yielded.set()
        await self.go_on.wait()
        async for event in super().run(request, context):
            if isinstance(event, Result):
                yield event


def grey_level(jpeg: bytes) -> int:
    return round(float(decode_jpeg(jpeg).mean()))


async def test_a_patchmatch_inpaint_with_previews_streams_small_jpegs(harness: Any) -> None:
    async with harness(plans=[PLAN], providers=[PatchMatchProvider()]) as h:
        events = await read_all(h.edit.Inpaint(inpaint(previews=True), metadata=metadata()))

    assert events[-1].HasField("completed")
    previews = previews_of(events)
    assert len(previews) >= 1
    for jpeg in previews:
        height, width = decode_jpeg(jpeg).shape[:2]
        assert max(height, width) <= PREVIEW_MAX_SIDE
        # The whole image, shrunk with its aspect kept: 400 x 300 becomes 256 x 192.
        assert (width, height) == (256, 192)


async def test_without_the_option_no_preview_bytes_are_sent(harness: Any) -> None:
    async with harness(plans=[PLAN], providers=[PatchMatchProvider()]) as h:
        events = await read_all(h.edit.Inpaint(inpaint(previews=False), metadata=metadata()))

    assert events[-1].HasField("completed")
    assert [e for e in events if e.HasField("progress")], "progress still flows"
    assert previews_of(events) == []


async def test_previews_are_rate_limited_on_the_servers_clock(harness: Any) -> None:
    clock = ManualClock()
    # Ten previews half the limit's interval apart, on the injected clock.
    step = PREVIEW_INTERVAL_S / 2
    provider = PreviewingProvider(clock, count=10, step_s=step)
    provider.go_on.set()
    async with harness(plans=[PLAN], providers=[provider], clock=clock) as h:
        events = await read_all(
            h.edit.Inpaint(inpaint(previews=True, provider="previewing"), metadata=metadata())
        )

    stages = [e.progress.stage for e in events if e.HasField("progress")]
    assert [s for s in stages if s.startswith("step")] == [f"step {i}" for i in range(10)]
    # The server lets out the previews at 0, 0.25, 0.5, 0.75 and 1.0 s: every other one;
    # the last, too soon at 1.125 s, goes out with the next event, at 1.25 s. A reader
    # that falls behind gets only the latest of those (coalesced), so which of the
    # earlier ones it sees depends on how fast it reads; the exact sequence is pinned by
    # test_the_gate_lets_out_every_other_preview_and_keeps_the_latest below.
    levels = [grey_level(p) for p in previews_of(events)]
    allowed = [0, 40, 80, 120, 160, 180]
    assert levels == [level for level in allowed if level in levels]
    assert levels[-1] == 180
    for jpeg in previews_of(events):
        assert decode_jpeg(jpeg).shape[:2] == (192, 256)


async def test_a_preview_that_came_too_soon_goes_out_with_a_later_event(harness: Any) -> None:
    clock = ManualClock()
    read_first = asyncio.Event()
    provider = PreviewingProvider(
        clock, count=2, step_s=PREVIEW_INTERVAL_S / 2, after_first=read_first
    )
    provider.go_on.set()
    async with harness(plans=[PLAN], providers=[provider], clock=clock) as h:
        call = h.edit.Inpaint(inpaint(previews=True, provider="previewing"), metadata=metadata())
        # Only the latest preview is kept for a reader behind: read the first one before
        # the provider goes on, as a reader keeping up would.
        events: list[pb.JobEvent] = []
        while not (events and events[-1].progress.stage == "step 0"):
            events.append(await call.read())
        read_first.set()
        events.extend(await read_all(call))

    carrying = [
        (e.progress.stage, grey_level(e.progress.preview)) for e in events if e.progress.preview
    ]
    assert carrying == [("step 0", 0), ("after", 20)]


async def test_a_reader_that_falls_behind_gets_only_the_latest_preview(harness: Any) -> None:
    clock = ManualClock()
    provider = PreviewingProvider(clock, count=6, step_s=PREVIEW_INTERVAL_S)
    async with harness(plans=[PLAN], providers=[provider], clock=clock) as h:
        call = h.edit.Inpaint(inpaint(previews=True, provider="previewing"), metadata=metadata())
        accepted = await call.read()
        # All six previews pass the rate limit, but this reader asks for its events only
        # once they are all out: it is behind by six.
        await provider.all_yielded.wait()
        watch = h.edit.WatchJob(pb.WatchJobRequest(job_id=accepted.job_id), metadata=metadata())
        replayed: list[pb.JobEvent] = []
        while len(replayed) < 1 + 6 + 1:
            replayed.append(await watch.read())
        provider.go_on.set()
        replayed.extend(await read_all(watch))
        await read_all(call)

    stages = [e.progress.stage for e in replayed if e.HasField("progress")]
    assert [s for s in stages if s.startswith("step")] == [f"step {i}" for i in range(6)]
    assert [grey_level(p) for p in previews_of(replayed)] == [100]
    last_step = next(e for e in replayed if e.progress.stage == "step 5")
    assert last_step.progress.preview


async def test_the_cli_saves_the_last_preview(harness: Any, tmp_path: Path) -> None:
    image, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    image.write_bytes(IMAGE)
    mask.write_bytes(MASK)
    out, preview = tmp_path / "out.png", tmp_path / "preview.jpg"
    clock = ManualClock()
    provider = PreviewingProvider(clock, count=4, step_s=PREVIEW_INTERVAL_S)
    provider.go_on.set()
    async with harness(plans=[PLAN], providers=[provider], clock=clock) as h:
        argv = [
            "--server",
            f"127.0.0.1:{h.server.port}",
            "--key",
            DEV_API_KEY,
            "inpaint",
            str(image),
            "--mask",
            str(mask),
            "--provider",
            "previewing",
            "--out",
            str(out),
            "--preview-out",
            str(preview),
        ]
        code = await asyncio.to_thread(main, argv)

    assert code == 0
    assert out.is_file()
    assert grey_level(preview.read_bytes()) == 60


async def test_the_gate_lets_out_every_other_preview_and_keeps_the_latest() -> None:
    clock = ManualClock()
    gate = PreviewGate(clock)
    sent: list[int] = []
    for index in range(10):
        shade = np.full((600, 800, 3), index * 20, np.uint8)
        jpeg = await gate.offer(shade)
        if jpeg is not None:
            sent.append(grey_level(jpeg))
        clock.advance(PREVIEW_INTERVAL_S / 2)
    jpeg = await gate.offer(None)  # a later progress event without a preview of its own
    assert jpeg is not None
    sent.append(grey_level(jpeg))
    assert sent == [0, 40, 80, 120, 160, 180]
