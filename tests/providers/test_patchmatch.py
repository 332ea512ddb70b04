"""The PatchMatch provider: conformance, exemplar quality, determinism, cancellation, config."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from importlib.metadata import entry_points

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from retouch.providers.patchmatch import MAX_PIXELS, PatchMatchConfig, PatchMatchProvider
from retouch.providers.patchmatch._inpaint import inpaint
from retouch.providers.patchmatch._patchmatch import Settings
from retouch.sdk import (
    ENTRY_POINT_GROUP,
    EditRequest,
    Health,
    InpaintRequest,
    JobCancelled,
    Operation,
    OutpaintRequest,
    Padding,
    Progress,
    ProgressReporter,
    ProviderRejected,
    Result,
)
from retouch.sdk.testing import CHECKS, Check, sample_context, sample_image, sample_mask
from retouch.server.clock import ManualClock
from retouch.server.registry import ProviderRegistry
from retouch.server.routing import Candidate
from retouch.server.scheduling.scheduler import Scheduler

Image = NDArray[np.uint8]


@pytest.fixture
async def provider() -> AsyncIterator[PatchMatchProvider]:
    started = PatchMatchProvider()
    await started.start({"max_workers": 1})
    yield started
    await started.aclose()


async def run(provider: PatchMatchProvider, request: EditRequest) -> tuple[list[Progress], Result]:
    async with aclosing(provider.run(request, sample_context(request))) as events:
        seen = [event async for event in events]
    result = seen[-1]
    assert isinstance(result, Result)
    return [e for e in seen if isinstance(e, Progress)], result


def tiled(height: int = 96, width: int = 128, period: int = 12) -> Image:
    """Random colour noise repeated every ``period`` pixels: texture no smooth fill
    can guess, but every patch of it appears elsewhere in the image."""
    tile = np.random.default_rng(7).integers(0, 256, (period, period, 3), dtype=np.uint8)
    reps = (-(-height // period), -(-width // period), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


def square_hole(
    height: int = 96, width: int = 128, top: int = 36, left: int = 52, side: int = 24
) -> Image:
    mask = np.zeros((height, width), np.uint8)
    mask[top : top + side, left : left + side] = 255
    return mask


def big(height: int, width: int) -> Image:
    """A large image without the memory: rejections only look at the shape."""
    return np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (height, width, 3))


def hole_error(original: Image, filled: Image, mask: Image) -> float:
    """Mean absolute difference over the masked pixels."""
    hole = mask > 0
    return float(np.abs(original[hole].astype(int) - filled[hole]).mean())


@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_conforms_to_the_sdk(provider: PatchMatchProvider, check: Check) -> None:
    await check(provider)


def test_is_registered_as_a_provider_entry_point() -> None:
    (entry,) = (e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "patchmatch")
    assert entry.load() is PatchMatchProvider


def test_manifest_inpaints_only_and_costs_two_credits() -> None:
    manifest = PatchMatchProvider().manifest
    assert manifest.name == "patchmatch"
    assert manifest.models == ("patchmatch",)
    assert manifest.operations == {Operation.INPAINT}
    assert manifest.supports_mask
    assert manifest.cost.estimate(2048, 2048) == 2
    assert manifest.max_pixels == MAX_PIXELS == 2048 * 2048
    assert manifest.quality_rank == 2
    assert not manifest.remote


async def test_a_periodic_texture_is_reconstructed_almost_exactly(
    provider: PatchMatchProvider,
) -> None:
    image, mask = tiled(), square_hole()
    _, result = await run(provider, InpaintRequest(image, mask, "patchmatch", 0))
    flat = image.copy()
    flat[mask > 0] = np.rint(image[mask == 0].mean(axis=0)).astype(np.uint8)
    telea = np.asarray(cv2.inpaint(image, mask, 3, cv2.INPAINT_TELEA), dtype=np.uint8)
    error = hole_error(image, result.image, mask)
    assert error < 1.0
    assert error < hole_error(image, flat, mask) / 20
    assert error < hole_error(image, telea, mask) / 20


async def test_the_same_seed_gives_the_same_pixels(provider: PatchMatchProvider) -> None:
    image, mask = sample_image(), sample_mask()
    _, first = await run(provider, InpaintRequest(image, mask, "patchmatch", 42))
    _, again = await run(provider, InpaintRequest(image, mask, "patchmatch", 42))
    _, other = await run(provider, InpaintRequest(image, mask, "patchmatch", 43))
    assert np.array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)


@pytest.mark.parametrize("seed", [-1, 2**63 - 1, 2**64 + 5])
async def test_any_integer_seed_is_accepted(provider: PatchMatchProvider, seed: int) -> None:
    _, result = await run(
        provider, InpaintRequest(sample_image(), sample_mask(), "patchmatch", seed)
    )
    assert result.image.shape == sample_image().shape


async def test_what_lies_under_the_mask_does_not_leak_into_the_fill(
    provider: PatchMatchProvider,
) -> None:
    image, mask = sample_image(), sample_mask()
    scribbled = image.copy()
    scribbled[mask > 0] = np.random.default_rng(0).integers(0, 256, (np.count_nonzero(mask), 3))
    _, clean = await run(provider, InpaintRequest(image, mask, "patchmatch", 5))
    _, dirty = await run(provider, InpaintRequest(scribbled, mask, "patchmatch", 5))
    assert np.array_equal(clean.image, dirty.image)


async def test_progress_names_each_pyramid_level(provider: PatchMatchProvider) -> None:
    progress, result = await run(
        provider, InpaintRequest(tiled(256, 256), square_hole(256, 256, 100, 100), "patchmatch", 0)
    )
    levels = {p.stage for p in progress if p.stage.startswith("level ")}
    assert len(levels) >= 2
    assert progress[0].stage == "preparing"
    assert result.metadata == {"algorithm": "patchmatch", "patch_size": "7"}


async def test_an_empty_mask_returns_the_image_unchanged(provider: PatchMatchProvider) -> None:
    image = sample_image()
    empty = np.zeros(image.shape[:2], np.uint8)
    _, result = await run(provider, InpaintRequest(image, empty, "patchmatch", 0))
    assert np.array_equal(result.image, image)


async def test_a_fully_masked_image_still_gets_an_answer(provider: PatchMatchProvider) -> None:
    image = sample_image()
    full = np.full(image.shape[:2], 255, np.uint8)
    _, result = await run(provider, InpaintRequest(image, full, "patchmatch", 0))
    assert result.image.shape == image.shape


async def test_cancelling_stops_the_computation_at_its_next_check() -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Progress | None] = asyncio.Queue()
    reporter = ProgressReporter(loop, queue)
    # Big enough to take about a second, so the cancellation lands mid-way.
    image, mask = tiled(512, 512), square_hole(512, 512, 160, 160, side=160)
    work = asyncio.create_task(
        asyncio.to_thread(inpaint, image, mask, seed=0, settings=Settings(), reporter=reporter)
    )
    await queue.get()
    reporter.cancel()
    with pytest.raises(JobCancelled):
        await work


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            InpaintRequest(big(2049, 2048), np.zeros((2049, 2048), np.uint8), "patchmatch", 0),
            "image",
        ),
        (InpaintRequest(sample_image(), np.zeros((3, 3), np.uint8), "patchmatch", 0), "mask"),
        (
            InpaintRequest(sample_image().astype(np.float32), sample_mask(), "patchmatch", 0),
            "image",
        ),
        (OutpaintRequest(sample_image(), Padding(left=8), "patchmatch", 0), "operation"),
        (InpaintRequest(sample_image(), sample_mask(), "telea", 0), "model"),
    ],
    ids=["too-big", "mask-shape", "not-uint8", "outpaint", "model"],
)
async def test_requests_it_cannot_serve_are_rejected_before_any_work(
    provider: PatchMatchProvider, request_: EditRequest, field: str
) -> None:
    with pytest.raises(ProviderRejected) as raised:
        await run(provider, request_)
    assert raised.value.field == field


async def test_config_is_validated_and_applied() -> None:
    provider = PatchMatchProvider()
    await provider.start({"patch_size": 5, "max_workers": 2})
    assert provider.config == PatchMatchConfig(patch_size=5, max_workers=2)
    assert provider.config.patch_radius == 2
    assert (await provider.health()).health is Health.HEALTHY
    _, result = await run(provider, InpaintRequest(tiled(), square_hole(), "patchmatch", 0))
    assert result.metadata["patch_size"] == "5"
    await provider.aclose()
    await provider.aclose()


@pytest.mark.parametrize("workers", [1, 3])
async def test_the_scheduler_admits_as_many_jobs_as_there_are_workers(workers: int) -> None:
    registry = await ProviderRegistry.discover(
        configs={"patchmatch": {"max_workers": workers}},
        entries=entry_points(group=ENTRY_POINT_GROUP, name="patchmatch"),
    )
    loaded = registry.providers["patchmatch"]
    queue = Scheduler(ManualClock()).queue(Candidate(loaded, "patchmatch", 2))
    assert loaded.manifest.capacity == workers
    assert queue.capacity == workers
    await registry.aclose()


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"patch": 7}, ["'patch'"]),
        ({"patch_size": 8}, ["'patch_size'"]),
        ({"patch_size": 1}, ["'patch_size'"]),
        ({"patch_size": 17}, ["'patch_size'"]),
        ({"patch_size": True}, ["'patch_size'"]),
        ({"patch_size": "7"}, ["'patch_size'"]),
        ({"max_workers": 0, "colour": "red"}, ["'max_workers'", "'colour'"]),
    ],
)
async def test_bad_config_fails_start_naming_every_bad_key(
    config: dict[str, object], named: list[str]
) -> None:
    with pytest.raises(ValueError, match="invalid patchmatch provider config") as raised:
        await PatchMatchProvider().start(config)
    for key in named:
        assert key in str(raised.value)


def test_a_bad_config_object_is_refused() -> None:
    with pytest.raises(ValueError, match="'patch_size' must be odd"):
        PatchMatchConfig(patch_size=6)


@pytest.mark.parametrize(("height", "width"), [(96, 128), (300, 600)])
async def test_each_pyramid_level_sends_one_preview_of_the_whole_image(
    provider: PatchMatchProvider, height: int, width: int
) -> None:
    image = tiled(height, width)
    mask = square_hole(height, width, top=height // 3, left=width // 3, side=height // 4)
    progress, result = await run(provider, InpaintRequest(image, mask, "patchmatch", 3))

    levels = {e.stage for e in progress if e.stage.startswith("level ")}
    with_previews = [e for e in progress if e.preview is not None]
    assert len(levels) > 1
    assert sorted(e.stage for e in with_previews) == sorted(levels)
    scale = min(1.0, 256 / max(height, width))
    for event in with_previews:
        assert event.preview is not None
        assert event.preview.dtype == np.uint8
        assert event.preview.shape == (round(height * scale), round(width * scale), 3)
    finest = with_previews[-1].preview
    assert finest is not None
    if scale == 1.0:
        # At full size the last level's preview is the result itself.
        assert np.array_equal(finest, result.image)
    keep = cv2.resize(mask, finest.shape[1::-1], interpolation=cv2.INTER_NEAREST) == 0
    shrunk = cv2.resize(image, finest.shape[1::-1], interpolation=cv2.INTER_AREA)
    # Outside the hole a preview shows the input.
    assert np.abs(finest[keep].astype(int) - shrunk[keep].astype(int)).mean() < 8
