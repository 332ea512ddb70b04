"""Compositing keeps unmasked pixels exactly and blends partial alpha."""

from __future__ import annotations

import numpy as np
import pytest

from retouch.sdk import composite, mask_bounds
from retouch.sdk.testing import sample_image, sample_mask


def test_unmasked_pixels_are_bit_identical_and_masked_ones_edited() -> None:
    original, mask = sample_image(), sample_mask()
    edited = np.full_like(original, 7)
    out = composite(original, edited, mask)
    assert np.array_equal(out[mask == 0], original[mask == 0])
    assert np.array_equal(out[mask == 255], edited[mask == 255])


def test_partial_alpha_blends_linearly() -> None:
    original = np.zeros((1, 1, 3), np.uint8)
    edited = np.full((1, 1, 3), 200, np.uint8)
    alpha = np.full((1, 1), 128, np.uint8)
    assert composite(original, edited, alpha)[0, 0, 0] == 100


def test_an_empty_mask_returns_a_copy_of_the_original() -> None:
    original = sample_image()
    out = composite(original, np.zeros_like(original), np.zeros(original.shape[:2], np.uint8))
    assert np.array_equal(out, original)
    assert out is not original


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot composite"):
        composite(sample_image(), sample_image(32, 32), sample_mask())


def test_mask_bounds_is_the_smallest_box_holding_the_mask() -> None:
    mask = np.zeros((10, 20), np.uint8)
    assert mask_bounds(mask) is None
    mask[2:5, 7] = 255
    mask[3, 9:12] = 255
    assert mask_bounds(mask) == (slice(2, 5), slice(7, 12))
