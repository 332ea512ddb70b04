"""The store stage's pixel work: unedited pixels put back, then encoded, without copies
of buffers the server owns and without touching the provider's."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from retouch.sdk import EnhanceKind, GenerationParams, Operation, Padding, composite
from retouch.server.edits import (
    EditSpec,
    EnhanceSpec,
    InpaintSpec,
    OutpaintSpec,
    OutputSpec,
    PreparedEdit,
    SourceFiles,
)
from retouch.server.imaging import decode_image, encode_image, prepare_mask
from retouch.server.jobs.results import finish_and_encode
from retouch.server.routing import RouteRequest


def pixels(height: int, width: int, seed: int) -> NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def prepared(image: NDArray[np.uint8], spec: EditSpec, size: tuple[int, int]) -> PreparedEdit:
    operation = {
        InpaintSpec: Operation.INPAINT,
        OutpaintSpec: Operation.OUTPAINT,
        EnhanceSpec: Operation.ENHANCE,
    }[type(spec)]
    return PreparedEdit(
        operation=operation,
        route=RouteRequest(operation, image.shape[1], image.shape[0]),
        output_size=size,
        output=OutputSpec("PNG", 90, inline=True),
        seed=1,
        image=image,
        sources=SourceFiles(None),
        spec=spec,
    )


def decoded(data: bytes) -> NDArray[np.uint8]:
    return decode_image(data, field="result", max_pixels=1 << 24).pixels


@pytest.mark.parametrize("feather", [0, 6])
@pytest.mark.parametrize("writable", [True, False])
def test_an_inpaint_is_the_input_with_the_blend_applied(feather: int, writable: bool) -> None:
    original = pixels(40, 60, seed=1)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:25, 20:45] = 255
    blend = prepare_mask(mask, invert=False, grow_px=0, feather_px=feather)
    edited = pixels(40, 60, seed=2)
    image = original.copy()
    image.flags.writeable = writable
    edited_before = edited.copy()
    spec = InpaintSpec(blend.binary, blend.alpha, GenerationParams())

    data = finish_and_encode(prepared(image, spec, (60, 40)), edited)

    np.testing.assert_array_equal(decoded(data), composite(original, edited, blend.alpha))
    assert data == encode_image(composite(original, edited, blend.alpha), "PNG", 90)
    np.testing.assert_array_equal(edited, edited_before, "the provider's array is its own")
    if not writable:
        np.testing.assert_array_equal(image, original)


def test_an_outpaint_keeps_the_original_region_and_feathers_into_it() -> None:
    original = pixels(20, 30, seed=3)
    edited = pixels(30, 44, seed=4)
    padding = Padding(left=6, right=8, top=4, bottom=6)
    spec = OutpaintSpec(padding, feather_px=3, params=GenerationParams())

    result = decoded(finish_and_encode(prepared(original, spec, (44, 30)), edited))

    canvas = np.zeros_like(edited)
    canvas[4:24, 6:36] = original
    new_area = np.full((30, 44), 255, np.uint8)
    new_area[4:24, 6:36] = 0
    alpha = prepare_mask(new_area, invert=False, grow_px=0, feather_px=3).alpha
    np.testing.assert_array_equal(result, composite(canvas, edited, alpha))
    np.testing.assert_array_equal(result[8:20, 10:32], original[4:16, 4:26])


def test_an_enhance_encodes_the_providers_array_without_changing_it() -> None:
    original = pixels(16, 16, seed=5)
    upscaled = pixels(32, 32, seed=6)
    before = upscaled.copy()
    spec = EnhanceSpec(EnhanceKind.UPSCALE, 2, 0.5)

    result = decoded(finish_and_encode(prepared(original, spec, (32, 32)), upscaled))

    np.testing.assert_array_equal(result, before)
    np.testing.assert_array_equal(upscaled, before)
