"""Masks: where an edit may change pixels, and how the result is blended back.

A mask is ``uint8`` of shape (height, width): 255 replaces, 0 keeps. Callers send one
as an image of the same size as the picture, in any mode decode accepts:

- gray (L, 1-bit, 16-bit) is used as is;
- RGB and opaque palettes are reduced to luminance (ITU-R BT.601), so a mask painted
  in white on black works, and a dim colour counts as "keep";
- a mask with transparency (RGBA, LA, transparent palette) follows the same
  convention as an RGBA input image: its alpha decides, transparent (alpha 0) =
  replace. A fully opaque RGBA mask carries nothing in alpha and falls back to
  luminance.

:func:`prepare_mask` then thresholds at 128, applies ``invert``, grows and feathers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from retouch.sdk import mask_bounds
from retouch.server.errors import InvalidArgument

from .decode import decode_planes, inspect_image

MAX_MASK_ADJUST_PX = 256


@dataclass(frozen=True, slots=True)
class PreparedMask:
    """A caller's mask after invert, grow and feather.

    ``binary`` (0 or 255) is the region the provider is asked to replace. ``alpha`` is
    the blend weight for :func:`retouch.sdk.composite`: 255 wherever ``binary`` is,
    falling linearly to 0 over ``feather_px`` pixels outside it, and exactly 0 beyond,
    so every pixel farther than that comes back bit-identical to the input.
    """

    binary: NDArray[np.uint8]
    alpha: NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class MaskLevels:
    """A decoded mask file: its 0..255 ``levels`` (255 = replace), whether they came
    from its alpha channel, whether the file was stored upright (no EXIF turn), and
    its container format."""

    levels: NDArray[np.uint8]
    from_alpha: bool
    upright: bool
    format: str

    def forwardable(self, binary: NDArray[np.uint8]) -> bool:
        """Whether the file itself says exactly ``binary`` in the white-replaces
        convention, so a remote provider may be sent the caller's bytes unchanged."""
        return not self.from_alpha and self.upright and np.array_equal(self.levels, binary)


def decode_mask(
    data: bytes, *, field: str, size: tuple[int, int], max_pixels: int
) -> NDArray[np.uint8]:
    """Decode a mask image for a picture of ``size`` (width, height) into 0..255 levels.

    See the module docstring for how each mode is read. The levels are not yet
    thresholded: :func:`prepare_mask` does that. Raises :class:`InvalidArgument` naming
    ``field`` for anything :func:`decode_image` would refuse, and for a mask whose size
    differs from the picture's (checked from the header, before decoding).
    """
    return decode_mask_levels(data, field=field, size=size, max_pixels=max_pixels).levels


def decode_mask_levels(
    data: bytes, *, field: str, size: tuple[int, int], max_pixels: int
) -> MaskLevels:
    """:func:`decode_mask`, telling also how the levels were read."""
    header = inspect_image(data, field=field, max_pixels=max_pixels)
    if header.display_size != size:
        mask_w, mask_h = header.display_size
        raise InvalidArgument(
            field,
            f"mask is {mask_w}x{mask_h} but image is {size[0]}x{size[1]}; masks are never "
            "resized, so send a mask the same size as the image",
        )
    planes = decode_planes(data, header, field=field)
    upright = header.orientation <= 1
    if planes.alpha is not None:
        return MaskLevels(mask_from_alpha(planes.alpha), True, upright, header.format)
    if planes.color.ndim == 2:
        return MaskLevels(planes.color, False, upright, header.format)
    gray = np.asarray(cv2.cvtColor(planes.color, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    return MaskLevels(gray, False, upright, header.format)


def mask_from_alpha(alpha: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The mask an alpha channel stands for: transparent (0) = replace (255)."""
    return np.asarray(cv2.bitwise_not(alpha), dtype=np.uint8)


def prepare_mask(
    mask: NDArray[np.uint8], *, invert: bool, grow_px: int, feather_px: int
) -> PreparedMask:
    """Threshold ``mask`` at 128, invert it if asked, grow it, then feather the blend.

    Growing and feathering measure Euclidean distance, so the region grows like a
    round brush: what dilating with an elliptical kernel does, but in ~6 ms at any
    radius for 1024x1024 where ``cv2.dilate`` took 1.3 s at 256 px. Raises
    :class:`InvalidArgument` for adjustments outside 0..256 px, or a mask that selects
    nothing.
    """
    _check_adjustment("mask_options.grow_px", grow_px)
    _check_adjustment("mask_options.feather_px", feather_px)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"a mask is a 2-D uint8 array, not {mask.dtype} {mask.shape}")
    kind = cv2.THRESH_BINARY_INV if invert else cv2.THRESH_BINARY
    _, thresholded = cv2.threshold(mask, 127, 255, kind)
    binary = np.asarray(thresholded, dtype=np.uint8)
    bounds = mask_bounds(binary)
    if bounds is None:
        hint = "black (0) marks" if invert else "white (255) marks"
        raise InvalidArgument(
            "mask",
            f"the mask selects no pixels, so there is nothing to edit; {hint} the pixels "
            "to replace (see mask_options.invert)",
        )
    if grow_px == 0 and feather_px == 0:
        return PreparedMask(binary=binary, alpha=binary.copy())

    # Pixels farther than this from the region stay 0 in both outputs, so the distance
    # transform only needs the region's bounding box widened by it.
    reach = grow_px + feather_px + 1
    rows, cols = bounds
    height, width = binary.shape
    window = (
        slice(max(rows.start - reach, 0), min(rows.stop + reach, height)),
        slice(max(cols.start - reach, 0), min(cols.stop + reach, width)),
    )
    outside = cv2.bitwise_not(binary[window])
    distance = np.asarray(
        cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE), dtype=np.float32
    )

    grown = np.zeros_like(binary)
    grown[window][distance <= grow_px] = 255
    alpha = np.zeros_like(binary)
    if feather_px == 0:
        alpha[window] = grown[window]
    else:
        # 255 up to grow_px from the original region, then a linear fall that reaches
        # 0 at grow_px + feather_px + 1: the feather_px pixels between are partial.
        weight = (reach - distance) * (255.0 / (feather_px + 1))
        alpha[window] = np.clip(weight + 0.5, 0.0, 255.0).astype(np.uint8)
    return PreparedMask(binary=grown, alpha=alpha)


def _check_adjustment(field: str, value: int) -> None:
    if not 0 <= value <= MAX_MASK_ADJUST_PX:
        name = field.rsplit(".", 1)[-1]
        raise InvalidArgument(
            field, f"{name} must be between 0 and {MAX_MASK_ADJUST_PX} pixels, got {value}"
        )
