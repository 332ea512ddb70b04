"""Decoding, masks and encoding at the server's pixel edge."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageOps

from retouch.sdk import composite
from retouch.server.errors import InvalidArgument
from retouch.server.imaging import (
    CONTENT_TYPES,
    MAX_MASK_ADJUST_PX,
    DecodedImage,
    decode_image,
    decode_mask,
    encode_image,
    mask_from_alpha,
    prepare_mask,
)
from retouch.server.imaging._formats import read_header
from retouch.server.imaging.decode import _planes_from_pillow

MAX_PIXELS = 4096 * 4096
ACCEPTED = "accepted formats are PNG, JPEG and WebP"


def rng_image(
    height: int = 24, width: int = 32, channels: int = 3, seed: int = 0
) -> NDArray[np.uint8]:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def smooth_image(height: int = 48, width: int = 64) -> NDArray[np.uint8]:
    """Gradients: what lossy codecs keep close, unlike noise."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack(
        [x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)]
    ).astype(np.uint8)


def save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    return decode_image(data, field="image", max_pixels=max_pixels)


def refusal(data: bytes, max_pixels: int = MAX_PIXELS) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        decode(data, max_pixels)
    assert caught.value.field == "image"
    return caught.value


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header claims ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 4))
        + png_chunk(b"IEND", b"")
    )


def with_orientation(image: Image.Image, fmt: str, orientation: int, **options: Any) -> bytes:
    exif = image.getexif()
    exif[0x0112] = orientation
    return save(image, fmt, exif=exif.tobytes(), **options)


def forbid_decoders(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a decoder ran on input that should be refused from its header")

    monkeypatch.setattr(cv2, "imdecode", fail)
    monkeypatch.setattr(Image, "open", fail)


# --- accepted formats and modes ------------------------------------------------------


def test_rgb_png_decodes_exactly() -> None:
    pixels = rng_image()
    decoded = decode(save(Image.fromarray(pixels), "PNG"))
    assert decoded.format == "PNG"
    assert (decoded.width, decoded.height) == (32, 24)
    assert decoded.alpha is None
    assert decoded.pixels.flags.c_contiguous
    assert decoded.pixels.dtype == np.uint8
    np.testing.assert_array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize(
    ("mode", "fmt", "options", "rgb8"),
    [
        ("RGB", "PNG", {}, True),
        ("RGB", "JPEG", {"quality": 95}, True),
        ("RGBA", "PNG", {}, False),
        ("L", "PNG", {}, False),
        ("L", "JPEG", {}, False),
        ("RGB", "PNG", {"transparency": (1, 2, 3)}, False),
        ("RGB", "WEBP", {"lossless": True}, False),
    ],
)
def test_eight_bit_colour_decodes_straight_to_rgb_with_the_same_pixels(
    mode: str, fmt: str, options: dict[str, Any], rgb8: bool
) -> None:
    pixels = smooth_image() if mode == "RGB" else smooth_image()[:, :, 0]
    image = Image.fromarray(pixels).convert(mode)
    data = save(image, fmt, **options)
    assert read_header(data, field="image").rgb8 is rgb8
    stored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert stored is not None
    if rgb8:
        expected = cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(decode(data).pixels, expected)
        oriented = decode(with_orientation(image, fmt, 6, **options)).pixels
        np.testing.assert_array_equal(oriented, np.rot90(expected, -1))


def test_rgba_png_keeps_alpha_separately() -> None:
    rgba = rng_image(channels=4)
    decoded = decode(save(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(decoded.pixels, rgba[:, :, :3])
    assert decoded.alpha is not None
    assert decoded.alpha.flags.c_contiguous
    np.testing.assert_array_equal(decoded.alpha, rgba[:, :, 3])


def test_fully_opaque_alpha_is_dropped() -> None:
    rgba = rng_image(channels=4)
    rgba[:, :, 3] = 255
    decoded = decode(save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert decoded.alpha is None
    np.testing.assert_array_equal(decoded.pixels, rgba[:, :, :3])


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_lossy_formats_decode_like_pillow(fmt: str) -> None:
    data = save(Image.fromarray(smooth_image()), fmt, quality=90)
    decoded = decode(data)
    assert decoded.format == fmt
    assert decoded.alpha is None
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(decoded.pixels, expected)


def test_lossless_webp_with_alpha_decodes_exactly() -> None:
    rgba = rng_image(channels=4)
    decoded = decode(save(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True, exact=True))
    np.testing.assert_array_equal(decoded.pixels, rgba[:, :, :3])
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha, rgba[:, :, 3])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_gray_is_replicated_to_rgb(fmt: str) -> None:
    gray = smooth_image()[:, :, 0]
    data = save(Image.fromarray(gray), fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    decoded = decode(data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    for channel in range(3):
        np.testing.assert_array_equal(decoded.pixels[:, :, channel], expected)


def test_gray_alpha_png_keeps_alpha() -> None:
    la = rng_image(channels=2)
    decoded = decode(save(Image.fromarray(la, "LA"), "PNG"))
    np.testing.assert_array_equal(decoded.pixels, np.repeat(la[:, :, :1], 3, axis=2))
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha, la[:, :, 1])


def test_one_bit_png_becomes_black_and_white() -> None:
    bits = rng_image(channels=1) > 127
    decoded = decode(save(Image.fromarray(bits), "PNG"))
    np.testing.assert_array_equal(decoded.pixels[:, :, 1], np.where(bits, 255, 0))


def test_palette_png_expands_to_rgb() -> None:
    image = Image.fromarray(rng_image()).quantize(16)
    decoded = decode(save(image, "PNG"))
    assert decoded.alpha is None
    np.testing.assert_array_equal(decoded.pixels, np.asarray(image.convert("RGB")))


def test_palette_png_with_transparency_gives_alpha() -> None:
    image = Image.fromarray(rng_image()).quantize(16)
    transparent = int(np.asarray(image)[0, 0])
    decoded = decode(save(image, "PNG", transparency=transparent))
    expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha, np.where(np.asarray(image) == transparent, 0, 255))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_keyed_transparency_becomes_alpha(mode: str) -> None:
    pixels = rng_image() if mode == "RGB" else rng_image(channels=1)
    key = pixels[0, 0]
    transparency = int(key) if mode == "L" else tuple(int(v) for v in key)
    decoded = decode(save(Image.fromarray(pixels), "PNG", transparency=transparency))
    assert decoded.alpha is not None
    hidden = np.all(pixels == key, axis=-1) if mode == "RGB" else pixels == key
    np.testing.assert_array_equal(decoded.alpha, np.where(hidden, 0, 255))


def test_cmyk_jpeg_converts_to_rgb() -> None:
    rgb = smooth_image()
    data = save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    decoded = decode(data)
    np.testing.assert_array_equal(
        decoded.pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    )
    assert np.abs(decoded.pixels.astype(int) - rgb).mean() < 4


def test_sixteen_bit_gray_png_scales_instead_of_clipping() -> None:
    levels = np.array([[0, 257, 32768, 32896, 65280, 65535]], dtype=np.uint16)
    data = save(Image.fromarray(levels), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    decoded = decode(data)
    np.testing.assert_array_equal(decoded.pixels[0, :, 0], [0, 1, 128, 128, 254, 255])


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_color_png_scales_and_keeps_channel_order(channels: int) -> None:
    rgb16 = np.zeros((2, 3, channels), np.uint16)
    rgb16[..., 0] = 65535  # red
    rgb16[..., 1] = 257 * 100
    rgb16[..., 2] = 0
    if channels == 4:
        rgb16[..., 3] = [[0, 32768, 65535], [65535, 65535, 65535]]
    order = cv2.COLOR_RGBA2BGRA if channels == 4 else cv2.COLOR_RGB2BGR
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb16, order))
    assert ok
    decoded = decode(encoded.tobytes())
    np.testing.assert_array_equal(decoded.pixels[0, 0], [255, 100, 0])
    if channels == 4:
        assert decoded.alpha is not None
        np.testing.assert_array_equal(decoded.alpha[0], [0, 128, 255])


def test_sixteen_bit_png_with_transparency_scales_through_pillow() -> None:
    levels = np.array([[0, 65535, 32896]], dtype=np.uint16)
    data = save(Image.fromarray(levels), "PNG", transparency=0)
    np.testing.assert_array_equal(decode(data).pixels[0, :, 0], [0, 255, 128])


@pytest.mark.parametrize("mode", ["F", "HSV", "LAB"])
def test_exotic_pixel_modes_are_refused_by_name(mode: str) -> None:
    with pytest.raises(InvalidArgument, match=f"pixel mode '{mode}' is not supported"):
        _planes_from_pillow(Image.new(mode, (4, 4)), "image")


def test_pillow_int32_mode_is_clipped_to_sixteen_bits_then_scaled() -> None:
    image = Image.fromarray(np.array([[-5, 0, 65535, 1 << 20]], dtype=np.int32), "I")
    color, alpha = _planes_from_pillow(image, "image")
    assert alpha is None
    np.testing.assert_array_equal(color[0], [0, 0, 255, 255])


# --- EXIF orientation -----------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied_once(orientation: int) -> None:
    data = with_orientation(
        Image.fromarray(rng_image(6, 10)), "JPEG", orientation, quality=100, subsampling=0
    )
    decoded = decode(data)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.pixels.flags.c_contiguous


@pytest.mark.parametrize(
    ("fmt", "options"), [("PNG", {}), ("WEBP", {"lossless": True, "exact": True})]
)
def test_png_and_webp_exif_orientation_is_applied(fmt: str, options: dict[str, Any]) -> None:
    rgba = rng_image(6, 10, channels=4)
    decoded = decode(with_orientation(Image.fromarray(rgba, "RGBA"), fmt, 6, **options))
    assert (decoded.width, decoded.height) == (6, 10)
    np.testing.assert_array_equal(decoded.pixels, np.rot90(rgba[:, :, :3], -1))
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha, np.rot90(rgba[:, :, 3], -1))


def test_rotated_photo_comes_back_upright() -> None:
    pixels = smooth_image(40, 80)
    decoded = decode(with_orientation(Image.fromarray(pixels), "JPEG", 6, quality=100))
    assert (decoded.width, decoded.height) == (40, 80)
    # Orientation 6 is "rotate 90 degrees clockwise to view": the stored top-left
    # corner ends up top-right.
    upright = np.rot90(pixels, -1).astype(int)
    assert np.abs(decoded.pixels.astype(int) - upright).mean() < 3


def test_png_exif_after_the_image_data_is_found() -> None:
    pixels = rng_image(6, 10)
    data = with_orientation(Image.fromarray(pixels), "PNG", 8)
    start = data.index(b"eXIf") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    chunk = data[start : start + 12 + length]
    without = data.replace(chunk, b"")
    iend = without.index(b"IEND") - 4
    moved = without[:iend] + chunk + without[iend:]
    assert moved.index(b"eXIf") > moved.index(b"IDAT")
    np.testing.assert_array_equal(decode(moved).pixels, np.rot90(pixels, 1))


def test_broken_exif_is_ignored() -> None:
    pixels = rng_image()
    data = save(Image.fromarray(pixels), "PNG", exif=b"Exif\x00\x00not a tiff header")
    np.testing.assert_array_equal(decode(data).pixels, pixels)


# --- refused input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("ICO", "ICO"), ("PPM", "no recognised")],
)
def test_other_formats_are_refused_by_name(fmt: str, name: str) -> None:
    error = refusal(save(Image.fromarray(rng_image()), fmt))
    assert name in error.message
    assert ACCEPTED in error.message


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (b"\x00\x00\x00\x1cftypheic" + bytes(20), "HEIF"),
        (b"\x00\x00\x00\x1cftypavif" + bytes(20), "AVIF"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "not WebP"),
        (b"definitely not an image", "no recognised image format"),
    ],
)
def test_non_images_are_refused_with_what_was_received(data: bytes, says: str) -> None:
    error = refusal(data)
    assert says in error.message
    assert ACCEPTED in error.message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("keep", [0.99, 0.5, 0.05])
def test_truncated_images_are_refused(fmt: str, keep: float) -> None:
    data = save(Image.fromarray(rng_image(64, 64)), fmt)
    error = refusal(data[: int(len(data) * keep)])
    assert "truncated" in error.message


def test_png_cut_before_iend_is_refused() -> None:
    data = save(Image.fromarray(rng_image()), "PNG")
    assert "truncated" in refusal(data[:-12]).message


@pytest.mark.parametrize(
    ("fmt", "landmark", "offset"),
    [
        ("PNG", b"IDAT", 40),  # damaged compressed data: zlib and CRC checks fail
        ("JPEG", b"\xff\xdb", 0),  # the quantisation table marker
        ("JPEG", b"\xff\xda", 0),  # the start-of-scan marker
        ("WEBP", b"\x9d\x01\x2a", 0),  # the VP8 frame start code
    ],
)
def test_structurally_corrupt_images_are_refused(fmt: str, landmark: bytes, offset: int) -> None:
    # Lossy bitstreams carry no checksums, so damage inside them can decode to noise
    # the way every viewer shows it; what is refused is damage a decoder can detect.
    data = bytearray(save(Image.fromarray(rng_image(64, 64)), fmt))
    start = data.index(landmark) + offset
    data[start : start + 8] = bytes(8)
    assert "corrupt" in refusal(bytes(data)).message


def test_corrupt_palette_png_through_pillow_is_refused() -> None:
    data = bytearray(save(Image.fromarray(rng_image(64, 64)).quantize(64), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 20 : idat + 60] = bytes(40)
    with pytest.raises(InvalidArgument, match="corrupt"):
        decode(bytes(data))


def test_animated_images_are_refused() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "green")]
    for fmt in ("WEBP", "PNG"):
        data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
        assert "animated" in refusal(data).message


def test_headers_padded_with_thousands_of_chunks_are_refused() -> None:
    png = save(Image.fromarray(rng_image()), "PNG")
    padded_png = png[:33] + png_chunk(b"tEXt", b"") * 5000 + png[33:]
    assert "corrupt" in refusal(padded_png).message
    jpeg = save(Image.fromarray(rng_image()), "JPEG")
    padded_jpeg = jpeg[:2] + b"\xff\xe5\x00\x02" * 5000 + jpeg[2:]
    assert "corrupt" in refusal(padded_jpeg).message


def test_jpeg_fill_bytes_before_a_marker_are_skipped() -> None:
    pixels = smooth_image()
    jpeg = save(Image.fromarray(pixels), "JPEG", quality=95)
    sof = jpeg.index(b"\xff\xc0")
    padded = jpeg[:sof] + b"\xff" * 100_000 + jpeg[sof:]
    np.testing.assert_array_equal(decode(padded).pixels, decode(jpeg).pixels)


def test_twelve_bit_jpeg_is_refused() -> None:
    data = bytearray(save(Image.fromarray(rng_image()), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 4] = 12
    assert "12-bit JPEG" in refusal(bytes(data)).message


def test_image_at_the_pixel_limit_is_accepted() -> None:
    assert decode(save(Image.fromarray(rng_image()), "PNG"), max_pixels=32 * 24).width == 32


def test_image_over_the_pixel_limit_is_refused_with_both_numbers() -> None:
    message = refusal(save(Image.fromarray(rng_image()), "PNG"), max_pixels=32 * 24 - 1).message
    assert "32x24 = 768 pixels" in message
    assert "767" in message


def test_zero_sized_header_is_refused() -> None:
    assert "empty 0x10" in refusal(png_declaring(0, 10)).message


def bomb_jpeg() -> bytes:
    data = bytearray(save(Image.fromarray(rng_image(8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def bomb_webp() -> bytes:
    data = bytearray(save(Image.fromarray(rng_image(8, 8, channels=4), "RGBA"), "WEBP"))
    assert data[12:16] == b"VP8X"
    data[24:30] = (16383).to_bytes(3, "little") * 2
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "declared"),
    [
        (lambda: png_declaring(50_000, 50_000), "50000x50000 = 2,500,000,000 pixels"),
        (bomb_jpeg, "65000x65000 = 4,225,000,000 pixels"),
        (bomb_webp, "16384x16384 = 268,435,456 pixels"),
    ],
)
def test_decompression_bombs_are_refused_from_the_header(
    make: Callable[[], bytes], declared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make()
    forbid_decoders(monkeypatch)
    tracemalloc.start()
    try:
        error = refusal(data, max_pixels=16_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert declared in error.message
    assert "16,000,000 pixels allowed" in error.message
    assert peak < 1_000_000


# --- masks ----------------------------------------------------------------------------


def read_mask(data: bytes, size: tuple[int, int] = (32, 24)) -> NDArray[np.uint8]:
    return decode_mask(data, field="mask", size=size, max_pixels=MAX_PIXELS)


def test_gray_mask_is_used_as_is() -> None:
    levels = rng_image(channels=1)
    np.testing.assert_array_equal(read_mask(save(Image.fromarray(levels), "PNG")), levels)


def test_rgb_mask_is_read_as_luminance() -> None:
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:, :8] = 255
    rgb[:, 8:16] = (255, 0, 0)
    rgb[:, 16:24] = (128, 128, 128)
    mask = read_mask(save(Image.fromarray(rgb), "PNG"))
    np.testing.assert_array_equal(mask[0, [0, 8, 16, 24]], [255, 76, 128, 0])


def test_rgba_mask_uses_alpha_with_transparent_meaning_replace() -> None:
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[:, :, 3] = 255
    rgba[:, :10, 3] = 0
    mask = read_mask(save(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(mask, np.where(rgba[:, :, 3] == 0, 255, 0))


def test_opaque_rgba_mask_falls_back_to_luminance() -> None:
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[:, :, 3] = 255
    rgba[5:10, 5:10, :3] = 255
    mask = read_mask(save(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(mask, rgba[:, :, 0])


def test_one_bit_and_palette_masks() -> None:
    bits = np.zeros((24, 32), bool)
    bits[3:9, 4:20] = True
    expected = np.where(bits, 255, 0)
    np.testing.assert_array_equal(read_mask(save(Image.fromarray(bits), "PNG")), expected)
    palette = Image.fromarray(expected.astype(np.uint8)).convert("P")
    np.testing.assert_array_equal(read_mask(save(palette, "PNG")), expected)


def test_mask_of_another_size_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = save(Image.fromarray(rng_image(10, 8, channels=1)), "PNG")
    forbid_decoders(monkeypatch)
    with pytest.raises(InvalidArgument) as caught:
        read_mask(data, size=(10, 8))
    assert caught.value.field == "mask"
    assert caught.value.message.startswith(
        "mask is 8x10 but image is 10x8; masks are never resized"
    )


def test_mask_size_is_compared_upright() -> None:
    data = with_orientation(Image.fromarray(rng_image(10, 8, channels=1)), "PNG", 8)
    assert read_mask(data, size=(10, 8)).shape == (8, 10)


def test_mask_decoding_refuses_what_images_refuse() -> None:
    with pytest.raises(InvalidArgument, match="GIF") as caught:
        read_mask(save(Image.fromarray(rng_image()), "GIF"))
    assert caught.value.field == "mask"


def test_mask_from_alpha_marks_transparent_pixels_for_replacement() -> None:
    alpha = np.array([[0, 1, 128, 254, 255]], np.uint8)
    np.testing.assert_array_equal(mask_from_alpha(alpha), [[255, 254, 127, 1, 0]])


def test_prepare_mask_thresholds_at_128_and_inverts() -> None:
    mask = np.array([[0, 127, 128, 255]], np.uint8)
    plain = prepare_mask(mask, invert=False, grow_px=0, feather_px=0)
    np.testing.assert_array_equal(plain.binary, [[0, 0, 255, 255]])
    np.testing.assert_array_equal(plain.alpha, plain.binary)
    inverted = prepare_mask(mask, invert=True, grow_px=0, feather_px=0)
    np.testing.assert_array_equal(inverted.binary, [[255, 255, 0, 0]])


@pytest.mark.parametrize("invert", [False, True])
def test_mask_selecting_nothing_is_refused(invert: bool) -> None:
    mask = np.full((8, 8), 255 if invert else 0, np.uint8)
    with pytest.raises(InvalidArgument, match="selects no pixels") as caught:
        prepare_mask(mask, invert=invert, grow_px=4, feather_px=4)
    assert caught.value.field == "mask"


@pytest.mark.parametrize("option", ["grow_px", "feather_px"])
@pytest.mark.parametrize("value", [-1, MAX_MASK_ADJUST_PX + 1])
def test_grow_and_feather_are_limited(option: str, value: int) -> None:
    settings = {"grow_px": 0, "feather_px": 0, option: value}
    with pytest.raises(InvalidArgument) as caught:
        prepare_mask(np.full((4, 4), 255, np.uint8), invert=False, **settings)
    assert caught.value.field == f"mask_options.{option}"
    assert "between 0 and 256" in caught.value.message


def test_grow_is_a_round_brush() -> None:
    mask = np.zeros((41, 41), np.uint8)
    mask[20, 20] = 255
    grown = prepare_mask(mask, invert=False, grow_px=10, feather_px=0).binary
    assert grown[20, 10] == grown[20, 30] == grown[10, 20] == 255
    assert grown[20, 9] == grown[9, 20] == 0
    assert grown[27, 27] == 255  # 9.9 px away on the diagonal
    assert grown[28, 28] == 0  # 11.3 px away


def reference_prepare(
    mask: NDArray[np.uint8], grow: int, feather: int
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """The definition, over the whole image: distances from the thresholded region."""
    region = mask >= 128
    distance = cv2.distanceTransform(
        np.where(region, 0, 255).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )
    binary = np.where(distance <= grow, 255, 0).astype(np.uint8)
    if feather == 0:
        return binary, binary
    weight = (grow + feather + 1 - distance) * (255.0 / (feather + 1))
    return binary, np.clip(weight + 0.5, 0, 255).astype(np.uint8)


def blob_mask(seed: int, size: tuple[int, int] = (120, 90)) -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size[1], size[0]), np.uint8)
    for _ in range(3):
        center = (int(rng.integers(0, size[0])), int(rng.integers(0, size[1])))
        axes = (int(rng.integers(2, 20)), int(rng.integers(2, 20)))
        cv2.ellipse(mask, center, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
    return mask


@pytest.mark.parametrize(("grow", "feather"), [(0, 1), (0, 9), (5, 0), (3, 12), (40, 40)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_prepared_mask_matches_its_definition(grow: int, feather: int, seed: int) -> None:
    mask = blob_mask(seed)
    prepared = prepare_mask(mask, invert=False, grow_px=grow, feather_px=feather)
    binary, alpha = reference_prepare(mask, grow, feather)
    np.testing.assert_array_equal(prepared.binary, binary)
    np.testing.assert_array_equal(prepared.alpha, alpha)


@pytest.mark.parametrize(("grow", "feather"), [(0, 1), (2, 6), (0, 30)])
def test_blend_is_full_inside_and_zero_beyond_the_feather(grow: int, feather: int) -> None:
    mask = blob_mask(7)
    prepared = prepare_mask(mask, invert=False, grow_px=grow, feather_px=feather)
    inside = prepared.binary == 255
    assert np.all(prepared.alpha[inside] == 255)
    assert np.all(prepared.binary[mask >= 128] == 255)
    to_region = cv2.distanceTransform(
        np.where(inside, 0, 255).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )
    # Within a pixel of rounding, nothing past feather_px from the region is blended...
    assert np.all(prepared.alpha[to_region >= feather + 2] == 0)
    # ...and every feathered pixel is partial, strictly between keep and replace.
    band = (prepared.alpha > 0) & ~inside
    assert band.any()
    assert np.all(prepared.alpha[band] < 255)

    original = rng_image(90, 120, seed=1)
    edited = rng_image(90, 120, seed=2)
    result = composite(original, edited, prepared.alpha)
    untouched = prepared.alpha == 0
    np.testing.assert_array_equal(result[untouched], original[untouched])
    np.testing.assert_array_equal(result[inside], edited[inside])


def test_feather_reaching_past_the_edges_is_clipped() -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[0:3, 0:3] = 255
    prepared = prepare_mask(mask, invert=False, grow_px=MAX_MASK_ADJUST_PX, feather_px=256)
    assert np.all(prepared.binary == 255)
    binary, alpha = reference_prepare(blob_mask(4, (30, 20)), 2, 256)
    got = prepare_mask(blob_mask(4, (30, 20)), invert=False, grow_px=2, feather_px=256)
    np.testing.assert_array_equal(got.binary, binary)
    np.testing.assert_array_equal(got.alpha, alpha)


# --- encoding -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_lossless_encodings_round_trip_exactly(fmt: str) -> None:
    pixels = rng_image(37, 53)
    data = encode_image(pixels, fmt, 100)
    decoded = decode(data)
    assert decoded.format == fmt
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_png_ignores_quality() -> None:
    pixels = rng_image()
    np.testing.assert_array_equal(decode(encode_image(pixels, "PNG", 1)).pixels, pixels)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_lossy_encodings_stay_close_and_follow_quality(fmt: str) -> None:
    pixels = smooth_image(96, 128)
    high = encode_image(pixels, fmt, 95)
    low = encode_image(pixels, fmt, 10)
    decoded = decode(high)
    assert decoded.format == fmt
    assert np.abs(decoded.pixels.astype(int) - pixels).mean() < 2
    assert len(low) < len(high)


def test_encode_accepts_a_non_contiguous_view() -> None:
    pixels = rng_image(40, 60)
    view = pixels[::2, ::3]
    np.testing.assert_array_equal(decode(encode_image(view, "PNG")).pixels, view)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("layout", ["contiguous", "view", "read-only"])
def test_encoding_in_place_gives_the_same_bytes(fmt: str, layout: str) -> None:
    pixels = smooth_image(40, 60) if layout == "contiguous" else smooth_image(80, 180)[::2, ::3]
    if layout == "read-only":
        pixels = pixels.copy()
        pixels.flags.writeable = False
    expected = encode_image(pixels.copy(), fmt)
    assert encode_image(pixels, fmt, in_place=True) == expected


def test_encoding_in_place_reuses_the_buffer_for_bgr() -> None:
    pixels = rng_image()
    rgb = pixels.copy()
    encode_image(pixels, "PNG", in_place=True)
    np.testing.assert_array_equal(pixels, rgb[:, :, ::-1])
    kept = rng_image()
    encode_image(kept, "PNG")
    np.testing.assert_array_equal(kept, rng_image())


def test_content_types_cover_every_format() -> None:
    assert dict(CONTENT_TYPES) == {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@pytest.mark.parametrize(
    ("pixels", "fmt", "quality", "says"),
    [
        (rng_image(), "GIF", 90, "unknown image format"),
        (rng_image(), "png", 90, "unknown image format"),
        (rng_image(), "JPEG", 0, "quality"),
        (rng_image(), "WEBP", 101, "quality"),
        (rng_image(channels=4), "PNG", 90, "RGB uint8"),
        (rng_image().astype(np.float32), "PNG", 90, "RGB uint8"),
    ],
)
def test_encode_refuses_programming_errors(
    pixels: NDArray[Any], fmt: str, quality: int, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        encode_image(pixels, fmt, quality)
