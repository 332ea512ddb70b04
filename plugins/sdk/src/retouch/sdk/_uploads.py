"""Which image bytes to upload: the caller's own encoding where the API can take it.

Forwarding the original saves an encode and keeps the caller's bytes, but only when
they hold exactly the pixels the request does: same size, no transparency (an alpha
channel would be read as a mask or kept in the answer) and no EXIF rotation the server
applied when it decoded them. Otherwise the decoded pixels are sent as PNG.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from ._context import EncodedImage
from ._images import encode_png
from ._requests import RGBImage

ACCEPTED = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
"""Image types most hosted APIs take, with the file extension to name uploads by."""
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, slots=True)
class Upload:
    """Image bytes to attach, with their MIME type and file extension."""

    data: bytes
    content_type: str
    extension: str


def upload_image(
    pixels: RGBImage, original: EncodedImage | None, accepted: Mapping[str, str] = ACCEPTED
) -> Upload:
    """``original`` (a job context's ``image``) when it is forwardable, else PNG of
    ``pixels``. ``accepted`` maps the MIME types the API takes to file extensions."""
    if (
        original is not None
        and original.content_type in accepted
        and _same_pixels(original.data, pixels)
    ):
        return Upload(original.data, original.content_type, accepted[original.content_type])
    return Upload(encode_png(pixels), "image/png", "png")


def _same_pixels(data: bytes, pixels: RGBImage) -> bool:
    # Image.open reads only the header; nothing is decoded here.
    try:
        with Image.open(io.BytesIO(data)) as image:
            height, width = pixels.shape[:2]
            return (
                image.size == (width, height)
                and image.mode in ("RGB", "L")
                and "transparency" not in image.info
                and image.getexif().get(_EXIF_ORIENTATION, 1) == 1
            )
    except (UnidentifiedImageError, OSError, ValueError):
        return False
