"""Inpainting on top of the hole filler: cropping to the mask and compositing."""

from __future__ import annotations

import numpy as np

from retouch.sdk import Mask, ProgressReporter, RGBImage, composite, mask_bounds

from ._patchmatch import Settings, crop_margin, fill


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
    )
    reporter.report(0.97, "compositing")
    as_bytes = np.clip(np.rint(filled), 0, 255).astype(np.uint8)
    out = image.copy()
    out[top:bottom, left:right] = composite(crop, as_bytes, crop_mask)
    return out


def _generator(seed: int) -> np.random.Generator:
    # Seeds are reported back to callers as given; any int maps to a valid NumPy seed.
    return np.random.default_rng(seed % 2**64)
