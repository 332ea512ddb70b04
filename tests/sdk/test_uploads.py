"""upload_image forwards the caller's bytes only when they hold the request's pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from retouch.sdk import EncodedImage, decode_image, encode_png, upload_image
from retouch.sdk.testing import sample_image


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_the_callers_own_encoding_is_forwarded(fmt: str, mime: str) -> None:
    pixels = sample_image()
    data = encoded(Image.fromarray(pixels), fmt)
    upload = upload_image(pixels, EncodedImage(data, mime))
    assert upload.data == data
    assert upload.content_type == mime


def test_without_an_original_the_pixels_go_as_png() -> None:
    pixels = sample_image()
    upload = upload_image(pixels, None)
    assert (upload.content_type, upload.extension) == ("image/png", "png")
    assert np.array_equal(decode_image(upload.data, provider="t"), pixels)


@pytest.mark.parametrize(
    "original",
    [
        pytest.param(
            lambda p: EncodedImage(
                encoded(Image.fromarray(np.dstack([p, p[..., :1]]), "RGBA"), "PNG"), "image/png"
            ),
            id="alpha channel",
        ),
        pytest.param(
            lambda p: EncodedImage(encoded(Image.fromarray(p[:50]), "PNG"), "image/png"),
            id="other size",
        ),
        pytest.param(
            lambda p: EncodedImage(encoded(Image.fromarray(p), "GIF"), "image/gif"),
            id="type the API does not take",
        ),
        pytest.param(
            lambda p: EncodedImage(
                encoded(Image.fromarray(p), "JPEG", exif=_rotated_exif()), "image/jpeg"
            ),
            id="EXIF rotation",
        ),
        pytest.param(lambda p: EncodedImage(b"not an image", "image/png"), id="unreadable"),
    ],
)
def test_originals_that_differ_from_the_pixels_are_replaced_by_png(original: object) -> None:
    pixels = sample_image()
    source = original(pixels)  # type: ignore[operator]
    upload = upload_image(pixels, source)
    assert upload.data == encode_png(pixels)
    assert upload.content_type == "image/png"


def _rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif
