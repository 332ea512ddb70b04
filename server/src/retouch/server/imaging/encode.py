"""Encode result pixels as PNG, JPEG or WebP, picking each encoder by measurement.

Figures: 1024x1024 skimage astronaut (cv2.resize, cubic), min of 7 runs on the dev box
(2 shared cores), encoded size in parentheses.

PNG, OpenCV (libpng + zlib):
    level 6, UP filter (≈ Pillow's default)    221 ms (1.34 MB); Pillow itself 349 ms
    level 1, UP filter                          36 ms (1.48 MB)
    level 1, PAETH filter, Z_RLE                40 ms (1.22 MB)
    level 1, UP filter, Z_RLE                   31 ms (1.41 MB)   <- chosen
    level 1, AVG filter, Z_HUFFMAN_ONLY         26 ms (1.41 MB), but 0.70 MB on flat UI
                                                art where RLE gives 0.24 MB
  Z_RLE keeps the runs flat regions produce, which Huffman-only coding cannot, and on
  photos (coffee, chelsea likewise) it beats level 1's default strategy on both time
  and size; PAETH saves another 13 % for 30 % more time, which the latency budget
  does not buy.

JPEG, OpenCV (libjpeg-turbo): 2.3 ms at q90 (0.18 MB); Pillow 2.8 ms. Huffman
optimisation saved 1.3 % for 2.4x the time, so it stays off.

WebP goes through Pillow because OpenCV exposes no effort setting and runs libwebp at
its slow default: lossy q90 took 75 ms with OpenCV against 36 ms with method=2
(0.117 MB vs 0.114 MB); lossless (quality 100) took 398 ms with OpenCV against 40 ms
with method=0 (1.10 MB vs 0.92 MB). Every encoder here releases the GIL.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from types import MappingProxyType

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

DEFAULT_QUALITY = 90

CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
)

_PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_UP,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
]
_WEBP_LOSSY_METHOD = 2
_WEBP_LOSSLESS_METHOD = 0


def encode_image(
    pixels: NDArray[np.uint8], fmt: str, quality: int = DEFAULT_QUALITY, *, in_place: bool = False
) -> bytes:
    """Encode RGB ``pixels`` (H, W, 3) as ``fmt`` (``"PNG"``, ``"JPEG"`` or ``"WEBP"``).

    ``quality`` (1..100) applies to JPEG and WebP; WebP at 100 is lossless. PNG is
    always lossless and ignores it. OpenCV's encoders (PNG, JPEG) read BGR: with
    ``in_place`` the channels of writable, C-contiguous ``pixels`` are swapped where
    they are instead of into a copy, leaving them in BGR order; pass it for a buffer
    nothing reads afterwards. Raises ``ValueError`` for an unknown format, a quality
    out of range or pixels of the wrong shape: the request layer validates what
    callers send, so reaching here with either is a bug.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected RGB uint8 pixels (H, W, 3), got {pixels.dtype} {pixels.shape}")
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unknown image format {fmt!r}; expected one of {sorted(CONTENT_TYPES)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    if fmt == "WEBP":
        return _encode_webp(pixels, quality)
    if in_place and pixels.flags.writeable and pixels.flags.c_contiguous:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR, dst=pixels)
    else:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    if fmt == "PNG":
        ok, encoded = cv2.imencode(".png", bgr, _PNG_PARAMS)
    else:
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {pixels.shape} image as {fmt}")
    return np.asarray(encoded).tobytes()


def _encode_webp(pixels: NDArray[np.uint8], quality: int) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if quality == 100:
        # For lossless WebP "quality" is effort, not fidelity: 0 is the fast end.
        image.save(buffer, "WEBP", lossless=True, quality=0, method=_WEBP_LOSSLESS_METHOD)
    else:
        image.save(buffer, "WEBP", quality=quality, method=_WEBP_LOSSY_METHOD)
    return buffer.getvalue()
