"""Recognise an encoded image from its bytes and read its header without decoding pixels.

Everything here is plain byte parsing: the size check that stops decompression bombs
has to happen before any decoder allocates, and Pillow's own ``open`` already refuses
huge images with its process-wide limit before telling us their size.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from retouch.server.errors import InvalidArgument

ACCEPTED = "accepted formats are PNG, JPEG and WebP"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_LATE_EXIF_WINDOW = 80 * 1024  # EXIF carried over from a JPEG fits in 64 KiB
# More chunks or segments than any real encoder writes before the pixel data; the
# header walk is pure Python, so it must stay short whatever a client sends.
_MAX_CHUNKS = 4096
_PNG_RGB = 2
_PNG_PALETTE = 3
_EXIF_ORIENTATION = 0x0112

# Formats we recognise only to refuse them by name.
_REFUSED_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"qoif", "QOI"),
    (b"%PDF", "PDF"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


@dataclass(frozen=True, slots=True)
class Header:
    """What the container says about an image, read without decoding pixels.

    ``width`` and ``height`` are as stored, before EXIF orientation. ``needs_pillow``
    marks the layouts OpenCV's decoders get wrong or lose information on (palettes,
    sub-byte and keyed transparency, CMYK); everything else takes the fast path.
    ``rgb8`` marks 8-bit three-channel colour without alpha, which OpenCV can decode
    straight into RGB.
    """

    format: str
    width: int
    height: int
    orientation: int
    needs_pillow: bool
    rgb8: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) once EXIF orientation is applied."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def read_header(data: bytes, *, field: str) -> Header:
    """Sniff the format from the leading bytes and parse the header; refuse the rest."""
    if not data:
        raise InvalidArgument(field, f"the image is empty (0 bytes); {ACCEPTED}")
    if data.startswith(_PNG_SIGNATURE):
        return _png_header(data, field)
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_header(data, field)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_header(data, field)
    raise InvalidArgument(field, f"received {_describe(data)}; {ACCEPTED}")


def check_size(header: Header, *, field: str, max_pixels: int) -> None:
    """Refuse images whose declared size is empty or over ``max_pixels``."""
    if header.width <= 0 or header.height <= 0:
        raise InvalidArgument(
            field,
            f"the {header.format} header declares an empty {header.width}x{header.height} image",
        )
    if header.pixels > max_pixels:
        raise InvalidArgument(
            field,
            f"the image is {header.width}x{header.height} = {header.pixels:,} pixels, "
            f"more than the {max_pixels:,} pixels allowed; downscale it and try again",
        )


def _describe(data: bytes) -> str:
    for prefix, name in _REFUSED_PREFIXES:
        if data.startswith(prefix):
            return f"a {name} image"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _AVIF_BRANDS:
            return "an AVIF image"
        if brand in _HEIF_BRANDS:
            return "a HEIF/HEIC image"
    if data[:4] == b"RIFF":
        return "a RIFF file that is not WebP"
    if data[:256].lstrip()[:1] == b"<":
        return "text that looks like SVG or XML"
    return f"{len(data):,} bytes in no recognised image format (starting {data[:8].hex(' ')})"


def _png_header(data: bytes, field: str) -> Header:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InvalidArgument(field, "the PNG data is truncated or corrupt: no IHDR chunk")
    width, height, depth, color = struct.unpack_from(">IIBB", data, 16)
    truncated = InvalidArgument(field, "the PNG data is truncated or corrupt")
    exif: bytes | None = None
    has_trns = animated = False
    # tRNS and acTL must come before the image data and eXIf normally does, so Python
    # walks only the chunks up to the first IDAT. The IDAT run can be hundreds of
    # thousands of chunks, and this parse holds the GIL; libpng checks it instead.
    pos = 8
    for _ in range(_MAX_CHUNKS):
        if pos + 12 > len(data):
            raise truncated
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind in (b"IDAT", b"IEND"):
            break
        end = pos + 12 + length
        if end > len(data):
            raise truncated
        if kind == b"tRNS":
            has_trns = True
        elif kind == b"acTL":
            animated = True
        elif kind == b"eXIf" and exif is None:
            exif = data[pos + 8 : pos + 8 + length]
        pos = end
    else:
        raise InvalidArgument(field, f"the PNG data is corrupt: over {_MAX_CHUNKS} chunks")
    if kind != b"IDAT":
        raise InvalidArgument(field, "the PNG data is corrupt: it holds no image data")
    if data.rfind(_PNG_IEND) == -1:
        raise truncated
    if animated:
        raise InvalidArgument(field, "animated PNG is not supported; send a single still image")
    return Header(
        format="PNG",
        width=width,
        height=height,
        orientation=_orientation(exif if exif is not None else _late_png_exif(data, pos)),
        needs_pillow=color == _PNG_PALETTE or depth < 8 or has_trns,
        rgb8=color == _PNG_RGB and depth == 8 and not has_trns,
    )


def _late_png_exif(data: bytes, image_data_start: int) -> bytes | None:
    """An eXIf chunk some writers put after the image data, found from the file's end.

    Only the tail is searched and each candidate must pass its CRC, so compressed
    bytes that happen to spell "eXIf" cost little and are never mistaken for one.
    """
    stop = len(data)
    floor = max(image_data_start, len(data) - _LATE_EXIF_WINDOW)
    for _ in range(4):
        found = data.rfind(b"eXIf", floor, stop)
        if found < 4:
            return None
        (length,) = struct.unpack_from(">I", data, found - 4)
        end = found + 4 + length
        if end + 4 <= len(data):
            body = data[found + 4 : end]
            if zlib.crc32(b"eXIf" + body) == int.from_bytes(data[end : end + 4], "big"):
                return body
        stop = found + 3
    return None


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])
_JPEG_FILL = re.compile(rb"\xff+")


def _jpeg_header(data: bytes, field: str) -> Header:
    corrupt = InvalidArgument(field, "the JPEG data is truncated or corrupt")
    exif: bytes | None = None
    frame: tuple[int, int, int, int] | None = None
    pos = 2
    for _ in range(_MAX_CHUNKS):
        fill = _JPEG_FILL.match(data, pos)
        if fill is None or fill.end() + 3 > len(data):
            raise corrupt
        pos = fill.end()
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:
            raise corrupt
        (length,) = struct.unpack_from(">H", data, pos)
        segment = data[pos + 2 : pos + length]
        if length < 2 or len(segment) != length - 2:
            raise corrupt
        if marker in _JPEG_SOF and frame is None:
            if len(segment) < 6:
                raise corrupt
            precision, height, width, components = struct.unpack_from(">BHHB", segment)
            frame = (precision, width, height, components)
        elif marker == 0xE1 and exif is None and segment.startswith(b"Exif\x00\x00"):
            exif = segment
        elif marker == 0xDA:
            break
        pos += length
    else:
        raise corrupt
    if frame is None:
        raise corrupt
    precision, width, height, components = frame
    if precision != 8:
        raise InvalidArgument(
            field, f"{precision}-bit JPEG is not supported; send an 8-bit JPEG or a PNG"
        )
    return Header(
        format="JPEG",
        width=width,
        height=height,
        orientation=_orientation(exif),
        # OpenCV skips the Adobe inversion some CMYK writers use; Pillow gets it right.
        needs_pillow=components == 4,
        rgb8=components == 3,
    )


def _webp_header(data: bytes, field: str) -> Header:
    corrupt = InvalidArgument(field, "the WebP data is truncated or corrupt")
    size: tuple[int, int] | None = None
    exif: bytes | None = None
    pos = 12
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(data):
            break
        kind, length = struct.unpack_from("<4sI", data, pos)
        if pos + 8 + length > len(data):
            raise corrupt
        # The bitstream chunks are most of the file; only their headers are needed.
        body = data[pos + 8 : pos + 8 + (length if kind == b"EXIF" else min(length, 16))]
        if kind == b"VP8X" and length >= 10:
            if body[0] & 0x02:
                raise InvalidArgument(
                    field, "animated WebP is not supported; send a single still image"
                )
            width = 1 + int.from_bytes(body[4:7], "little")
            height = 1 + int.from_bytes(body[7:10], "little")
            size = (width, height)
        elif kind == b"VP8 " and size is None and length >= 10:
            if body[3:6] != b"\x9d\x01\x2a":
                raise corrupt
            width, height = struct.unpack_from("<HH", body, 6)
            size = (width & 0x3FFF, height & 0x3FFF)
        elif kind == b"VP8L" and size is None and length >= 5:
            if body[0] != 0x2F:
                raise corrupt
            bits = int.from_bytes(body[1:5], "little")
            size = (1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
        elif kind == b"EXIF" and exif is None:
            exif = body
        pos += 8 + length + (length & 1)
    else:
        raise corrupt
    if size is None:
        raise corrupt
    return Header(
        format="WEBP",
        width=size[0],
        height=size[1],
        orientation=_orientation(exif),
        needs_pillow=False,
    )


def _orientation(exif: bytes | None) -> int:
    if not exif:
        return 1
    try:
        value = Image.Exif()
        value.load(exif)
        orientation = value.get(_EXIF_ORIENTATION, 1)
    # Metadata is advisory: a broken EXIF block must not cost the caller their image,
    # and Pillow's TIFF reader reports one with whatever exception it meets first.
    except Exception:
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
