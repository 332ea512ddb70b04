"""Inpainting on top of the hole filler: cropping to the mask and compositing."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from retouch.sdk import Mask, ProgressReporter, RGBImage, composite, mask_bounds

from ._patchmatch import FloatImage, Settings, crop_margin, fill

PREVIEW_MAX_SIDE = 256
"""Longest side of the previews sent after each pyramid level, in pixels."""


def inpaint(
    image: RGBImage,
    mask: Mask,
    *,
    seed: int,
    settings: Settings,
    reporter: ProgressReporter,
) -> RGBImage:
    """Fill ``image`` where ``mask`` is non-zero; other pixels come back bit-identical.

    Only the mask's bounding box plus a context margin as wide as the hole is worked
    on: exemplars far from a hole are rarely the best ones, and the cost follows the
    crop, not the image.
    """
    reporter.report(0.02, "preparing")
    bounds = mask_bounds(mask)
    if bounds is None:
        return image.copy()
    rows, cols = bounds
    margin = crop_margin(rows.stop - rows.start, cols.stop - cols.start, settings.patch_radius)
    height, width = mask.shape
    top, bottom = max(rows.start - margin, 0), min(rows.stop + margin, height)
    left, right = max(cols.start - margin, 0), min(cols.stop + margin, width)
    crop = np.ascontiguousarray(image[top:bottom, left:right])
    crop_mask = np.ascontiguousarray(mask[top:bottom, left:right])
    filled = fill(
        crop.astype(np.float32),
        crop_mask > 0,
        rng=_generator(seed),
        reporter=reporter,
        settings=settings,
        progress=(0.05, 0.95),
        preview=_LevelPreview(image, crop_mask, (top, bottom, left, right)),
    )
    reporter.report(0.97, "compositing")
    as_bytes = np.clip(np.rint(filled), 0, 255).astype(np.uint8)
    out = image.copy()
    out[top:bottom, left:right] = composite(crop, as_bytes, crop_mask)
    return out


def _generator(seed: int) -> np.random.Generator:
    # Seeds are reported back to callers as given; any int maps to a valid NumPy seed.
    return np.random.default_rng(seed % 2**64)


class _LevelPreview:
    """The whole image with a pyramid level's estimate composited into the hole, at most
    :data:`PREVIEW_MAX_SIDE` pixels on its longest side.

    The work happens at preview scale: the image is shrunk once, and each level's
    estimate is resized straight to the hole region's preview size, so a preview costs
    little whatever the image's size.
    """

    def __init__(self, image: RGBImage, crop_mask: Mask, box: tuple[int, int, int, int]) -> None:
        height, width = image.shape[:2]
        scale = min(1.0, PREVIEW_MAX_SIDE / max(height, width))
        self._size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rows = _scaled_span(box[0], box[1], scale, self._size[1])
        cols = _scaled_span(box[2], box[3], scale, self._size[0])
        self._box = (*rows, *cols)
        self._image = image
        self._crop_mask = crop_mask
        self._base: RGBImage | None = None

    def __call__(self, level: FloatImage) -> RGBImage:
        if self._base is None:
            self._base = _resized(self._image, self._size)
        top, bottom, left, right = self._box
        region = (right - left, bottom - top)
        estimate = _resized(np.clip(np.rint(level), 0, 255).astype(np.uint8), region)
        alpha = _resized(self._crop_mask, region)
        out = self._base.copy()
        out[top:bottom, left:right] = composite(out[top:bottom, left:right], estimate, alpha)
        return out


def _scaled_span(start: int, stop: int, scale: float, limit: int) -> tuple[int, int]:
    # At least one preview pixel, so that even a tiny hole shows.
    first = min(round(start * scale), limit - 1)
    return first, max(min(round(stop * scale), limit), first + 1)


def _resized(pixels: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    if (pixels.shape[1], pixels.shape[0]) == size:
        return pixels
    shrinking = size[0] < pixels.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(pixels, size, interpolation=interpolation))
