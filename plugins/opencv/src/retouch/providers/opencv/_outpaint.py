"""Outpainting: extend the canvas by mirroring, then fade into a smooth fill.

Plain cv2.inpaint of a wide margin smears edge pixels into long streaks, and pure
mirroring repeats recognisable objects. So the margin starts as the mirror image (which
continues texture seamlessly at the border), keeps the mirror's fine detail only for
the first few pixels, and fades its colours over a longer ramp into a low-resolution
inpainting of the margin, which carries the border's colours outwards smoothly.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from retouch.sdk import Mask, Padding, ProgressReporter, RGBImage

_BASE_SIDE = 192
"""Longest side of the low-resolution canvas the smooth fill is inpainted on."""
_DETAIL_SIGMA = 2.0
"""Gaussian sigma separating the mirror's detail from its colours."""
_DETAIL_DECAY_PX = 16.0
"""Distance from the original over which the mirrored detail fades (e-folding)."""
_STRIPE_ROWS = 256


def outpaint(
    image: RGBImage,
    padding: Padding,
    *,
    method: int,
    radius: int,
    reporter: ProgressReporter,
) -> RGBImage:
    """Return ``image`` on a canvas grown by ``padding``, the margin filled in.

    The original pixels come back bit-identical in their place on the new canvas.
    """
    reporter.report(0.05, "extending canvas")
    height, width = image.shape[:2]
    top, bottom, left, right = padding.top, padding.bottom, padding.left, padding.right
    if padding.is_empty:
        return image.copy()
    mirrored = np.asarray(
        cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REFLECT_101),
        dtype=np.uint8,
    )
    canvas_height, canvas_width = mirrored.shape[:2]
    margin = np.full((canvas_height, canvas_width), 255, dtype=np.uint8)
    margin[top : top + height, left : left + width] = 0

    reporter.report(0.15, "filling margin")
    base = _smooth_fill(mirrored, margin, method=method, radius=radius)
    reporter.check()
    colours = cv2.GaussianBlur(mirrored, (0, 0), _DETAIL_SIGMA)
    distance = cv2.distanceTransform(margin, cv2.DIST_L2, 5)
    ramp = max(16.0, 0.2 * min(height, width))

    out = np.empty_like(mirrored)
    for start in range(0, canvas_height, _STRIPE_ROWS):
        reporter.report(0.4 + 0.55 * start / canvas_height, "blending")
        rows = slice(start, min(start + _STRIPE_ROWS, canvas_height))
        d = distance[rows][..., None]
        fade = np.clip(d / ramp, 0.0, 1.0)
        detail_weight = np.exp(-d / _DETAIL_DECAY_PX)
        low = colours[rows].astype(np.float32)
        detail = mirrored[rows].astype(np.float32) - low
        blended = (1.0 - fade) * low + fade * base[rows] + detail_weight * detail
        out[rows] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[top : top + height, left : left + width] = image
    return out


def _smooth_fill(mirrored: RGBImage, margin: Mask, *, method: int, radius: int) -> RGBImage:
    """Inpaint the margin on a small copy of the canvas and scale it back up, blurred."""
    canvas_height, canvas_width = margin.shape
    scale = max(1, math.ceil(max(canvas_height, canvas_width) / _BASE_SIDE))
    size = (max(1, canvas_width // scale), max(1, canvas_height // scale))
    small = cv2.resize(mirrored, size, interpolation=cv2.INTER_AREA)
    # Any small pixel that mixes in margin is unknown, so no mirrored colour leaks in.
    small_margin = np.where(cv2.resize(margin, size, interpolation=cv2.INTER_AREA) > 0, 255, 0)
    filled = cv2.inpaint(small, small_margin.astype(np.uint8), radius, method)
    filled = cv2.GaussianBlur(filled, (0, 0), 2.0)
    large = cv2.resize(filled, (canvas_width, canvas_height), interpolation=cv2.INTER_CUBIC)
    return np.asarray(large, dtype=np.uint8)
