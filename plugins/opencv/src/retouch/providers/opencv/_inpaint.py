"""Inpainting with cv2.inpaint, cropped to the mask so large images stay cheap."""

from __future__ import annotations

import cv2
import numpy as np

from retouch.sdk import Mask, ProgressReporter, RGBImage, composite, mask_bounds

METHODS: dict[str, int] = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
"""Model name to cv2 flag; the first is the provider's default model."""


def inpaint(
    image: RGBImage, mask: Mask, *, method: int, radius: int, reporter: ProgressReporter
) -> RGBImage:
    """Fill ``image`` where ``mask`` is non-zero; other pixels come back bit-identical.

    cv2.inpaint only reads pixels within ``radius`` of the hole, so working on the
    mask's bounding box plus a margin gives the same pixels as the whole image (we
    checked, for both methods) in a fraction of the time when the mask is small.
    """
    reporter.report(0.05, "preparing")
    bounds = mask_bounds(mask)
    if bounds is None:
        return image.copy()
    rows, cols = bounds
    margin = 2 * radius + 2
    height, width = mask.shape
    top, bottom = max(rows.start - margin, 0), min(rows.stop + margin, height)
    left, right = max(cols.start - margin, 0), min(cols.stop + margin, width)
    window = (slice(top, bottom), slice(left, right))
    crop_mask = mask[window]
    reporter.report(0.1, "inpainting")
    # OpenCV reads the window through its row stride: no copy of it is needed.
    filled = np.asarray(cv2.inpaint(image[window], crop_mask, radius, method), dtype=np.uint8)
    reporter.report(0.9, "compositing")
    out = image.copy()
    region = out[window]
    composite(region, filled, crop_mask, out=region)
    return out
