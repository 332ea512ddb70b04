"""The built-in OpenCV provider: conformance, plausible pixels, sizes, limits and config."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import aclosing
from importlib.metadata import entry_points
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from retouch.providers.opencv import MAX_PIXELS, OpenCVProvider
from retouch.providers.opencv._inpaint import inpaint
from retouch.providers.opencv._provider import MANIFEST
from retouch.sdk import (
    ENTRY_POINT_GROUP,
    EditRequest,
    EnhanceKind,
    EnhanceRequest,
    Health,
    InpaintRequest,
    OutpaintRequest,
    Padding,
    Progress,
    ProviderRejected,
    Result,
)
from retouch.sdk.testing import CHECKS, Check, sample_context, sample_image, sample_mask


@pytest.fixture
async def provider() -> AsyncIterator[OpenCVProvider]:
    started = OpenCVProvider()
    await started.start({"max_workers": 1})
    yield started
    await started.aclose()


async def run(provider: OpenCVProvider, request: EditRequest) -> tuple[list[Progress], Result]:
    async with aclosing(provider.run(request, sample_context(request))) as events:
        seen = [event async for event in events]
    result = seen[-1]
    assert isinstance(result, Result)
    return [e for e in seen if isinstance(e, Progress)], result


def gradient(height: int = 96, width: int = 128) -> NDArray[np.uint8]:
    """Gentle ramps: one level per pixel across, one down, half of each in blue."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([40 + x, 60 + y, 100 + (x + y) // 2], -1).astype(np.uint8)


def big(height: int, width: int) -> NDArray[np.uint8]:
    """A large image without the memory: rejections only look at the shape."""
    return np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (height, width, 3))


@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_conforms_to_the_sdk(provider: OpenCVProvider, check: Check) -> None:
    await check(provider)


def test_is_registered_as_a_provider_entry_point() -> None:
    (entry,) = (e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "opencv")
    assert entry.load() is OpenCVProvider


def test_manifest_offers_telea_first_and_costs_one_credit() -> None:
    manifest = OpenCVProvider().manifest
    assert manifest.name == "opencv"
    assert manifest.models[:2] == ("telea", "ns")
    assert manifest.upscale_factors == (2, 4)
    assert manifest.cost.estimate(4096, 4096) == 1
    assert not manifest.remote
    assert manifest.max_pixels == MAX_PIXELS == 4096 * 4096


@pytest.mark.parametrize("model", ["telea", "ns"])
async def test_inpaint_reconstructs_a_smooth_gradient(provider: OpenCVProvider, model: str) -> None:
    image = gradient()
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[40:56, 50:70] = 255
    _, result = await run(provider, InpaintRequest(image, mask, model, 0))
    error = np.abs(result.image.astype(int) - image)[mask > 0]
    # Filling the hole with its mean colour would be off by about 4.5 on average.
    assert error.mean() < 3
    assert error.max() < 10


async def test_inpaint_reports_its_stages(provider: OpenCVProvider) -> None:
    # Large enough to run off the event loop, where each stage is heard as it starts.
    image, mask = sample_image(256, 256), sample_mask(256, 256)
    progress, result = await run(provider, InpaintRequest(image, mask, "ns", 0))
    assert [p.stage for p in progress] == ["preparing", "inpainting", "compositing"]
    assert result.metadata == {"algorithm": "ns"}


async def test_cropping_to_the_mask_changes_nothing(provider: OpenCVProvider) -> None:
    image = sample_image()
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[2:9, 100:126] = 255  # near two borders, so the margin is clipped
    mask[60, 10:20] = 255
    _, result = await run(provider, InpaintRequest(image, mask, "telea", 0))
    whole = cv2.inpaint(np.ascontiguousarray(image), mask, 3, cv2.INPAINT_TELEA)
    assert np.array_equal(result.image, whole)


async def test_an_empty_mask_returns_the_image_unchanged(provider: OpenCVProvider) -> None:
    image = sample_image()
    empty = np.zeros(image.shape[:2], np.uint8)
    _, result = await run(provider, InpaintRequest(image, empty, "telea", 0))
    assert np.array_equal(result.image, image)


@pytest.mark.parametrize(
    "padding",
    [
        Padding(right=40),
        Padding(left=5, right=6, top=7, bottom=8),
        Padding(top=300, left=260),  # wider than the image: mirrored more than once
    ],
    ids=str,
)
async def test_outpaint_grows_the_canvas_around_the_untouched_original(
    provider: OpenCVProvider, padding: Padding
) -> None:
    image = sample_image()
    request = OutpaintRequest(image, padding, "telea", 0)
    _, result = await run(provider, request)
    width, height = request.output_size
    assert result.image.shape == (height, width, 3)
    top, left = padding.top, padding.left
    assert np.array_equal(result.image[top : top + 96, left : left + 128], image)


async def test_outpaint_of_a_flat_image_stays_flat(provider: OpenCVProvider) -> None:
    image = np.full((40, 50, 3), (30, 140, 220), np.uint8)
    _, result = await run(provider, OutpaintRequest(image, Padding(left=70, bottom=25), "ns", 0))
    assert np.abs(result.image.astype(int) - (30, 140, 220)).max() <= 1


async def test_outpaint_continues_the_border_smoothly(provider: OpenCVProvider) -> None:
    image = gradient()
    _, result = await run(provider, OutpaintRequest(image, Padding(right=32), "telea", 0))
    seam = result.image[:, 126:130, :2].astype(int)
    assert np.abs(np.diff(seam, axis=1)).max() <= 8


@pytest.mark.parametrize("scale", [2, 4])
async def test_upscale_multiplies_both_sides(provider: OpenCVProvider, scale: int) -> None:
    image = sample_image()
    _, result = await run(
        provider, EnhanceRequest(image, EnhanceKind.UPSCALE, "lanczos4+unsharp", 0, scale)
    )
    assert result.image.shape == (96 * scale, 128 * scale, 3)
    shrunk = cv2.resize(result.image, (128, 96), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(int) - image).mean() < 6


async def test_denoise_removes_noise_and_sharpen_adds_contrast(provider: OpenCVProvider) -> None:
    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 128, np.uint8)
    noisy = np.clip(flat + rng.normal(0, 12, flat.shape), 0, 255).astype(np.uint8)
    _, denoised = await run(
        provider, EnhanceRequest(noisy, EnhanceKind.DENOISE, "fast-nl-means", 0)
    )
    assert denoised.image.std() < noisy.std() / 3

    edge = np.zeros((32, 32, 3), np.uint8)
    edge[:, 16:] = 200
    _, sharpened = await run(provider, EnhanceRequest(edge, EnhanceKind.SHARPEN, "unsharp-mask", 0))
    assert sharpened.image[:, 17].min() > 200
    assert sharpened.image[:, 14].max() == 0


@pytest.mark.parametrize("kind", [EnhanceKind.DENOISE, EnhanceKind.SHARPEN])
async def test_strength_zero_changes_nothing(provider: OpenCVProvider, kind: EnhanceKind) -> None:
    image = sample_image()
    _, result = await run(
        provider,
        EnhanceRequest(
            image, kind, MANIFEST.models_for(f"enhance.{kind.value}")[0], 0, strength=0.0
        ),
    )
    assert np.array_equal(result.image, image)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            EnhanceRequest(big(4096, 4096), EnhanceKind.UPSCALE, "lanczos4+unsharp", 0, scale=4),
            "scale",
        ),
        (
            EnhanceRequest(sample_image(), EnhanceKind.UPSCALE, "lanczos4+unsharp", 0, scale=3),
            "scale",
        ),
        (
            EnhanceRequest(sample_image(), EnhanceKind.SHARPEN, "unsharp-mask", 0, strength=2.0),
            "strength",
        ),
        (InpaintRequest(big(4097, 4096), np.zeros((4097, 4096), np.uint8), "telea", 0), "image"),
        (InpaintRequest(sample_image(), np.zeros((3, 3), np.uint8), "telea", 0), "mask"),
        (OutpaintRequest(big(4096, 4096), Padding(left=1), "telea", 0), "padding"),
        (OutpaintRequest(sample_image(), Padding(), "telea", 0), None),
    ],
    ids=["x4-too-big", "x3", "strength", "image-too-big", "mask-shape", "outpaint-too-big", "ok"],
)
async def test_requests_beyond_its_limits_are_rejected_before_any_work(
    provider: OpenCVProvider, request_: EditRequest, field: str | None
) -> None:
    if field is None:
        _, result = await run(provider, request_)
        assert np.array_equal(result.image, request_.image)
        return
    with pytest.raises(ProviderRejected) as raised:
        await run(provider, request_)
    assert raised.value.field == field


async def test_doubling_a_4096_square_is_allowed(provider: OpenCVProvider) -> None:
    request = EnhanceRequest(big(4096, 4096), EnhanceKind.UPSCALE, "lanczos4+unsharp", 0, scale=2)
    provider._plan(request)  # validation only: the work itself is bench material


async def test_config_is_validated_and_applied() -> None:
    provider = OpenCVProvider()
    await provider.start({"inpaint_radius": 7, "max_workers": 2})
    assert provider.config.inpaint_radius == 7
    assert provider.config.max_workers == 2
    assert provider.manifest.capacity == 2
    assert (await provider.health()).health is Health.HEALTHY
    await provider.aclose()
    await provider.aclose()


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"radius": 3}, ["'radius'"]),
        ({"inpaint_radius": 0}, ["'inpaint_radius'"]),
        ({"inpaint_radius": 51}, ["'inpaint_radius'"]),
        ({"inpaint_radius": True}, ["'inpaint_radius'"]),
        ({"inpaint_radius": "3"}, ["'inpaint_radius'"]),
        ({"max_workers": 0, "colour": "red"}, ["'max_workers'", "'colour'"]),
    ],
)
async def test_bad_config_fails_start_naming_every_bad_key(
    config: dict[str, object], named: list[str]
) -> None:
    with pytest.raises(ValueError, match="invalid opencv provider config") as raised:
        await OpenCVProvider().start(config)
    for key in named:
        assert key in str(raised.value)


def small_inpaint(side: int, hole: int) -> InpaintRequest:
    image = gradient(side, side)
    mask = np.zeros((side, side), np.uint8)
    mask[:hole, :hole] = 255
    return InpaintRequest(image, mask, "telea", 0)


@pytest.mark.parametrize(
    ("request_", "inline"),
    [
        (small_inpaint(64, 20), True),  # 400 masked pixels at radius 3
        (small_inpaint(64, 40), False),  # 1600 masked pixels: too much work for the loop
        (small_inpaint(256, 8), False),  # small hole, but the whole image is copied
    ],
    ids=["64x64 with a 20 px hole", "64x64 with a 40 px hole", "256x256"],
)
async def test_only_a_tiny_inpaint_runs_on_the_event_loop(
    provider: OpenCVProvider,
    request_: InpaintRequest,
    inline: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran_on: list[int] = []

    def recording(*args: Any, **kwargs: Any) -> NDArray[np.uint8]:
        ran_on.append(threading.get_ident())
        return inpaint(*args, **kwargs)

    monkeypatch.setattr("retouch.providers.opencv._provider.inpaint", recording)
    progress, result = await run(provider, request_)
    assert (ran_on == [threading.get_ident()]) is inline
    # Run inline, the stages are over before anyone could hear them: only the last is told.
    stages = ["compositing"] if inline else ["preparing", "inpainting", "compositing"]
    assert [p.stage for p in progress] == stages
    assert result.image.shape == request_.image.shape
