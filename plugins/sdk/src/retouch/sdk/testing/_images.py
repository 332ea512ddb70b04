"""Deterministic test inputs: small textured images and masks, built with NumPy only."""

from __future__ import annotations

import numpy as np

from .._requests import Mask, RGBImage

SAMPLE_HEIGHT = 96
SAMPLE_WIDTH = 128


def sample_image(
    height: int = SAMPLE_HEIGHT, width: int = SAMPLE_WIDTH, *, seed: int = 0
) -> RGBImage:
    """A read-only RGB image with gradients, stripes, edges and a little noise.

    Textured so that a provider which ignores the mask, shifts pixels or swaps channels
    produces visibly different values; read-only so that one which edits its input in
    place fails loudly.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 255.0 * x / max(width - 1, 1)
    green = 127.5 + 100.0 * np.sin(x / 5.0) * np.cos(y / 7.0)
    blue = np.where((x // 16 + y // 16) % 2 == 0, 200.0, 40.0)
    image = np.stack([red, green, blue], axis=-1) + rng.normal(0.0, 6.0, (height, width, 3))
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


def sample_mask(height: int = SAMPLE_HEIGHT, width: int = SAMPLE_WIDTH, *, seed: int = 0) -> Mask:
    """A read-only binary mask (255 = replace) covering about 7 % of the image.

    It holds a rectangle, a disc and a one-pixel line, away from the borders, so both
    blobs and thin scratches are exercised and plenty of pixels must stay untouched.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), dtype=np.uint8)
    top, left = height // 4, width // 5
    mask[top : top + height // 5, left : left + width // 5] = 255
    cy = int(height * 0.6) + int(rng.integers(-2, 3))
    cx = int(width * 0.65) + int(rng.integers(-2, 3))
    radius = max(2, min(height, width) // 10)
    y, x = np.ogrid[0:height, 0:width]
    mask[(y - cy) ** 2 + (x - cx) ** 2 <= radius**2] = 255
    mask[height - height // 6, width // 10 : width - width // 10] = 255
    mask.setflags(write=False)
    return mask
