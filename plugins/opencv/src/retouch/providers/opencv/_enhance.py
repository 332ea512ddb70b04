"""Enhancement: Lanczos upscaling, non-local-means denoising and unsharp masking."""

from __future__ import annotations

import cv2
import numpy as np

from retouch.sdk import ProgressReporter, RGBImage

_UPSCALE_UNSHARP = 0.3
"""Unsharp amount after upscaling; Lanczos plus this scored best on our round trips
(downscale, upscale, PSNR against the original) among cubic/Lanczos with 0, 0.3, 0.6."""
_DENOISE_TILE_ROWS = 256
_DENOISE_OVERLAP = 16
"""Rows of context each tile borrows: the 21 px search window plus the 7 px template
reach 13 px, so tiled output equals whole-image output."""
_SHARPEN_SIGMA = 1.5


def upscale(image: RGBImage, scale: int, *, reporter: ProgressReporter) -> RGBImage:
    """Enlarge ``image`` ``scale`` times (Lanczos), then sharpen it slightly."""
    reporter.report(0.05, "upscaling")
    height, width = image.shape[:2]
    large = np.asarray(
        cv2.resize(image, (width * scale, height * scale), interpolation=cv2.INTER_LANCZOS4),
        dtype=np.uint8,
    )
    reporter.report(0.7, "sharpening")
    return _unsharp(large, amount=_UPSCALE_UNSHARP, sigma=0.5 * scale)


def denoise(image: RGBImage, strength: float, *, reporter: ProgressReporter) -> RGBImage:
    """Non-local-means denoising; ``strength`` 0..1 maps to filter strength h 2..15.

    Works in horizontal tiles so progress flows and cancellation takes effect between
    tiles on large images.
    """
    reporter.report(0.05, "denoising")
    if strength <= 0.0:
        return image.copy()
    h = 2.0 + 13.0 * min(strength, 1.0)
    # OpenCV's Lab conversion inside assumes BGR; hand it BGR so luminance is right.
    bgr = np.ascontiguousarray(image[..., ::-1])
    height = bgr.shape[0]
    out = np.empty_like(bgr)
    for start in range(0, height, _DENOISE_TILE_ROWS):
        reporter.report(0.05 + 0.9 * start / height, "denoising")
        stop = min(start + _DENOISE_TILE_ROWS, height)
        lo, hi = max(start - _DENOISE_OVERLAP, 0), min(stop + _DENOISE_OVERLAP, height)
        tile = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(bgr[lo:hi]), None, h, h, 7, 21)
        out[start:stop] = tile[start - lo : stop - lo]
    return np.ascontiguousarray(out[..., ::-1])


def sharpen(image: RGBImage, strength: float, *, reporter: ProgressReporter) -> RGBImage:
    """Unsharp mask; ``strength`` 0..1 maps to amount 0..2."""
    reporter.report(0.1, "sharpening")
    if strength <= 0.0:
        return image.copy()
    return _unsharp(image, amount=2.0 * min(strength, 1.0), sigma=_SHARPEN_SIGMA)


def _unsharp(image: RGBImage, *, amount: float, sigma: float) -> RGBImage:
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    return np.asarray(cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0.0), dtype=np.uint8)
