"""Encoded images for remote providers: PNG out, any common format in, and results
fitted to what the request asked for."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._compositing import composite
from ._errors import ProviderBadResponse
from ._requests import EditRequest, InpaintRequest, Mask, OutpaintRequest, RGBImage

MAX_DECODED_PIXELS = 67_108_864
"""Largest image :func:`decode_image` accepts (8192 x 8192): a provider's answer bigger
than that is refused before it is decompressed."""


def encode_png(pixels: RGBImage | Mask, *, compress_level: int = 1) -> bytes:
    """PNG bytes of an RGB image or a greyscale mask.

    Level 1 because the bytes go straight onto a network: higher levels cost several
    times the CPU for a few percent fewer bytes on photographs.
    """
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"cannot encode a {pixels.dtype} array of shape {pixels.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


def decode_image(data: bytes, *, provider: str, what: str = "the result image") -> RGBImage:
    """Decode a provider's image answer (PNG, JPEG, WEBP...) to RGB ``uint8``.

    Raises :class:`~retouch.sdk.ProviderBadResponse` naming ``provider`` when the
    bytes are not an image or one larger than :data:`MAX_DECODED_PIXELS`.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_DECODED_PIXELS:
                raise ProviderBadResponse(
                    f"provider {provider!r} sent {what} of {width} x {height} pixels, more "
                    f"than the {MAX_DECODED_PIXELS} accepted"
                )
            rgb = image.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ProviderBadResponse(
            f"provider {provider!r} sent {what} that is not a readable image "
            f"({len(data)} bytes): {exc}"
        ) from None


def expected_size(request: EditRequest) -> tuple[int, int]:
    """(width, height) of the result ``request`` asks for."""
    if isinstance(request, InpaintRequest):
        height, width = request.image.shape[:2]
        return width, height
    return request.output_size


def fit_to_request(request: EditRequest, image: RGBImage, *, put_back: bool = True) -> RGBImage:
    """A remote provider's ``image``, made into the result ``request`` asks for.

    Hosted models often answer at their own resolution (multiples of 64, a fixed
    size): the image is resized to the expected size when it differs. Then, unless
    ``put_back`` is false, the pixels the edit must keep are put back exactly: outside
    the mask for inpaint, the original region for outpaint. Pass ``put_back=False``
    when the host composites the result itself (:attr:`JobContext.host_composites`):
    doing it here too costs a full-size copy and blend per job for nothing.
    """
    width, height = expected_size(request)
    if image.shape[:2] != (height, width):
        resized = Image.fromarray(np.ascontiguousarray(image)).resize(
            (width, height), Image.Resampling.LANCZOS
        )
        image = np.asarray(resized, dtype=np.uint8)
    if not put_back:
        return image
    if isinstance(request, InpaintRequest):
        return composite(request.image, image, request.mask)
    if isinstance(request, OutpaintRequest):
        out = image.copy()
        top, left = request.padding.top, request.padding.left
        original = request.image
        out[top : top + original.shape[0], left : left + original.shape[1]] = original
        return out
    return image
