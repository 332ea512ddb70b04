"""Image decoding, mask preparation and result encoding: the server's pixel edge.

Everything a client sends is decoded here, once, into the SDK's shapes (RGB ``uint8``
(H, W, 3) images, ``uint8`` (H, W) masks with 255 = replace), and every result is
encoded here. Bad input becomes :class:`~retouch.server.errors.InvalidArgument` naming
the request field; no decoder exception escapes. All functions are CPU-bound and
release the GIL in OpenCV and Pillow, so callers run them with ``asyncio.to_thread``.
"""

from ._formats import Header
from .decode import DecodedImage, decode_image, inspect_image
from .encode import CONTENT_TYPES, DEFAULT_QUALITY, encode_image
from .mask import (
    MAX_MASK_ADJUST_PX,
    MaskLevels,
    PreparedMask,
    decode_mask,
    decode_mask_levels,
    mask_from_alpha,
    prepare_mask,
)

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_QUALITY",
    "MAX_MASK_ADJUST_PX",
    "DecodedImage",
    "Header",
    "MaskLevels",
    "PreparedMask",
    "decode_image",
    "decode_mask",
    "decode_mask_levels",
    "encode_image",
    "inspect_image",
    "mask_from_alpha",
    "prepare_mask",
]
