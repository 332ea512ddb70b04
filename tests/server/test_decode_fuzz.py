"""Fuzzing the decoders: whatever bytes arrive, the answer is pixels or INVALID_ARGUMENT.

Hypothesis mutates valid PNG, JPEG and WebP files (bit flips, truncation, chunks
dropped, repeated or moved, bytes spliced in) with a fixed, derandomized budget, so the
suite runs the same cases every time in a few seconds and fails on the first input
that makes a decoder raise anything else (a Pillow AssertionError once became INTERNAL).
"""

from __future__ import annotations

import contextlib
import io
import random
import struct
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from grpc import aio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from retouch.server.errors import InvalidArgument
from retouch.server.imaging import decode_image, decode_mask
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import metadata, photo

SIZE = (24, 16)
MAX_PIXELS = 1 << 20


def _encoded(mode: str, fmt: str, **options: object) -> bytes:
    pixels = photo(SIZE)
    picture = Image.fromarray(pixels)
    if mode == "P":
        picture = picture.convert("P")
    elif mode in ("L", "RGBA", "I;16"):
        picture = picture.convert("L" if mode == "I;16" else mode)
        if mode == "I;16":
            picture = Image.fromarray(np.asarray(picture, dtype=np.uint16) * 257)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    return buffer.getvalue()


SEEDS: tuple[bytes, ...] = (
    _encoded("RGB", "PNG"),
    _encoded("P", "PNG"),
    _encoded("P", "PNG", transparency=0),
    _encoded("RGBA", "PNG"),
    _encoded("I;16", "PNG"),
    _encoded("RGB", "JPEG", quality=80),
    _encoded("L", "JPEG"),
    _encoded("RGB", "WEBP", quality=80),
    _encoded("RGB", "WEBP", lossless=True),
)


def _png_chunks(data: bytes) -> list[bytes] | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunks.append(data[pos : pos + 12 + length])
        pos += 12 + length
    return chunks


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed file with one to three mutations."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "chunks", "header"]))
        if kind == "flip":
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[draw(st.integers(1, len(data))) :]
        elif kind == "splice":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "header":
            # The first bytes are where sizes, depths and colour types live.
            at = draw(st.integers(0, min(40, len(data) - 1)))
            data[at] = draw(st.integers(0, 255))
        else:
            chunks = _png_chunks(bytes(data))
            if not chunks or len(chunks) < 2:
                continue
            body = chunks[1:]
            move = draw(st.sampled_from(["drop", "repeat", "shuffle"]))
            index = draw(st.integers(0, len(body) - 1))
            if move == "drop":
                del body[index]
            elif move == "repeat":
                body.insert(draw(st.integers(0, len(body))), body[index])
            else:
                body = draw(st.permutations(body))
            data = bytearray(b"\x89PNG\r\n\x1a\n" + chunks[0] + b"".join(body))
        if not data:
            data = bytearray(b"\x00")
    return bytes(data)


def _decodes_or_refuses(decode: Callable[[bytes], object], data: bytes) -> None:
    # Anything but pixels or InvalidArgument propagates and fails the example.
    with contextlib.suppress(InvalidArgument):
        decode(data)


FUZZ = settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(mutated())
def test_decode_image_answers_pixels_or_invalid_argument(data: bytes) -> None:
    _decodes_or_refuses(lambda d: decode_image(d, field="image", max_pixels=MAX_PIXELS), data)


@FUZZ
@given(mutated())
def test_decode_mask_answers_levels_or_invalid_argument(data: bytes) -> None:
    def decode(d: bytes) -> object:
        return decode_mask(d, field="mask", size=SIZE, max_pixels=MAX_PIXELS)

    _decodes_or_refuses(decode, data)


def _grpc_cases(count: int) -> list[bytes]:
    # Mutations drawn from a fixed seed: the same few cases every run.
    chooser = random.Random(9)
    cases = []
    for seed in SEEDS:
        for _ in range(count):
            data = bytearray(seed)
            for _ in range(3):
                data[chooser.randrange(len(data))] = chooser.randrange(256)
            cases.append(bytes(data[: chooser.randrange(len(data) // 2, len(data) + 1)]))
    return cases


async def test_mutated_images_over_grpc_never_get_internal(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
) -> None:
    mask = _encoded("L", "PNG")
    codes = []
    for data in _grpc_cases(3):
        request = pb.InpaintRequest(
            image=common_pb2.ImageInput(data=data), mask=common_pb2.ImageInput(data=mask)
        )
        codes.append(await _status_of(edit.Inpaint(request, metadata=metadata())))
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
    assert grpc.StatusCode.INVALID_ARGUMENT in codes


async def _status_of(call: object) -> grpc.StatusCode:
    try:
        async for _ in call:  # type: ignore[attr-defined]
            pass
    except aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_seed_decodes(seed: int) -> None:
    decoded = decode_image(SEEDS[seed], field="image", max_pixels=MAX_PIXELS)
    assert (decoded.width, decoded.height) == SIZE
