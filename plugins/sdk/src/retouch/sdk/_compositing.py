"""Keep unmasked pixels exactly: the rule every inpaint and outpaint result obeys."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ._requests import Mask, RGBImage


def mask_bounds(mask: NDArray[np.uint8]) -> tuple[slice, slice] | None:
    """Row and column slices of the smallest box holding every non-zero pixel."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def composite(original: RGBImage, edited: RGBImage, alpha: Mask) -> RGBImage:
    """Blend ``edited`` over ``original`` with ``alpha`` (0 = original, 255 = edited).

    Pixels where alpha is 0 come back bit-identical to ``original``, pixels where it is
    255 identical to ``edited``; values between blend linearly.
    """
    if original.shape != edited.shape or original.shape[:2] != alpha.shape:
        raise ValueError(
            f"cannot composite {edited.shape} over {original.shape} with mask {alpha.shape}"
        )
    out = original.copy()
    bounds = mask_bounds(alpha)
    if bounds is None:
        return out
    a = alpha[bounds][..., None].astype(np.uint16)
    o = original[bounds].astype(np.uint16)
    e = edited[bounds].astype(np.uint16)
    out[bounds] = ((o * (255 - a) + e * a + 127) // 255).astype(np.uint8)
    return out
