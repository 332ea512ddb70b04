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


def reference_blend(original: np.ndarray, edited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The definition: round(original * (1 - a) + edited * a) with a = alpha / 255."""
    a = alpha[..., None].astype(np.uint32)
    blended = original.astype(np.uint32) * (255 - a) + edited.astype(np.uint32) * a + 127
    return (blended // 255).astype(np.uint8)


def random_alpha(rng: np.random.Generator, hard: bool) -> np.ndarray:
    alpha = np.zeros((48, 64), np.uint8)
    box = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    alpha[10:30, 20:50] = np.where(box > 127, 255, 0) if hard else box
    return alpha


@pytest.mark.parametrize("hard", [True, False], ids=["hard mask", "feathered"])
@pytest.mark.parametrize("into", ["new", "original", "edited", "other"])
def test_every_destination_gets_the_same_bytes(hard: bool, into: str) -> None:
    rng = np.random.default_rng(5)
    original = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    edited = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    alpha = random_alpha(rng, hard)
    expected = reference_blend(original, edited, alpha)
    destinations = {
        "new": None,
        "original": original,
        "edited": edited,
        "other": np.full_like(original, 9),
    }
    out = destinations[into]
    result = composite(original, edited, alpha, out=out)
    np.testing.assert_array_equal(result, expected)
    if out is not None:
        assert result is out


def test_compositing_into_the_original_changes_it_only_inside_the_mask() -> None:
    original = sample_image().copy()
    alpha = np.zeros(original.shape[:2], np.uint8)
    alpha[20:30, 40:60] = 255
    before = original.copy()
    out = composite(original, np.zeros_like(original), alpha, out=original)
    assert out is original
    keep = alpha == 0
    assert np.array_equal(out[keep], before[keep])
    assert (out[20:30, 40:60] == 0).all()


def test_an_edited_image_that_is_the_original_composites_to_itself() -> None:
    image = sample_image().copy()
    before = image.copy()
    assert np.array_equal(composite(image, image, sample_mask(), out=image), before)


def test_read_only_or_misshapen_destinations_are_refused() -> None:
    original, mask = sample_image(), sample_mask()
    frozen = original.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        composite(original, original, mask, out=frozen)
    with pytest.raises(ValueError, match="must be a writable uint8 array"):
        composite(original, original, mask, out=np.zeros((10, 10, 3), np.uint8))


def test_a_mask_without_pixels_has_no_bounds() -> None:
    assert mask_bounds(np.zeros((0, 5), np.uint8)) is None
    assert mask_bounds(np.zeros((5, 0), np.uint8)) is None
    mask = np.zeros((4, 4), np.uint8)
    mask[3, 0] = 1
    assert mask_bounds(mask) == (slice(3, 4), slice(0, 1))
