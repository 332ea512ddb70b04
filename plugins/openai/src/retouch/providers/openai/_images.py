"""What the edits endpoint is sent: the image, a mask in its alpha convention, a size.

Our masks are white (255) where pixels are to be replaced; the edits endpoint reads a
mask's *alpha* instead, editing where it is fully transparent. So the mask travels as
an RGBA PNG, black, opaque where we keep and transparent (alpha 0) where we replace,
of the same dimensions as the image.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from retouch.sdk import Mask, OutpaintRequest, RGBImage

SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
"""The sizes gpt-image-1 answers in (``size``); the answer is resized back to ours."""


def alpha_mask_png(mask: Mask) -> bytes:
    """``mask`` (255 = replace) as the endpoint's RGBA mask (alpha 0 = edit)."""
    height, width = mask.shape
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(mask > 0, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def outpaint_canvas(request: OutpaintRequest) -> tuple[RGBImage, Mask]:
    """The grown canvas and its mask (255 on the new margin) for an outpaint.

    The margin starts as a mirror of the image so the model sees plausible context at
    the border; it is all masked, so the model paints it anew.
    """
    image, padding = request.image, request.padding
    width_pad = ((padding.top, padding.bottom), (padding.left, padding.right), (0, 0))
    canvas = np.pad(image, width_pad, mode="reflect")
    mask = np.full(canvas.shape[:2], 255, dtype=np.uint8)
    height, width = image.shape[:2]
    mask[padding.top : padding.top + height, padding.left : padding.left + width] = 0
    return np.ascontiguousarray(canvas), mask


def nearest_size(width: int, height: int) -> tuple[int, int]:
    """The supported size whose aspect ratio is closest to ``width`` x ``height``."""
    ratio = width / height
    return min(SIZES, key=lambda size: abs(np.log(size[0] / size[1]) - np.log(ratio)))


UPLOAD_MAX_SIDE = 2048
"""Longest side sent: the model answers at most 1536 px a side, so more only costs
upload time and can pass the 25 MB image limit. The mask shrinks with it."""


def shrink_for_upload(image: RGBImage, mask: Mask) -> tuple[RGBImage, Mask] | None:
    """``image`` and ``mask`` scaled to fit :data:`UPLOAD_MAX_SIDE`, or ``None`` when
    they already fit. A shrunk mask marks every pixel any masked pixel fell into."""
    height, width = image.shape[:2]
    scale = UPLOAD_MAX_SIDE / max(height, width)
    if scale >= 1.0:
        return None
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.LANCZOS)
    small_mask = Image.fromarray(np.ascontiguousarray(mask)).resize(size, Image.Resampling.BOX)
    binary = np.where(np.asarray(small_mask) > 0, 255, 0).astype(np.uint8)
    return np.asarray(small, dtype=np.uint8), binary
