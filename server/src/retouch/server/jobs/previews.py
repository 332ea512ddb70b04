"""Previews of a running job: the provider's RGB previews, few and small, as JPEG.

A job that asked for previews (``OutputOptions.previews``) gets at most one every
:data:`PREVIEW_INTERVAL_S` on the injected clock; of the provider's previews in between
only the latest is kept, to ride on the first progress event once the interval is over
(every progress fraction still goes out). Each is shrunk to at most
:data:`PREVIEW_MAX_SIDE` pixels on its longest side and encoded off the event loop
unless it is tiny. Coalescing for slow readers happens in :class:`~.live.LiveJob`,
which keeps only the latest preview's bytes.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from numpy.typing import NDArray

from ..clock import Clock
from ..edits import off_loop
from ..imaging.encode import encode_image

log = logging.getLogger(__name__)

PREVIEW_MAX_SIDE = 256
"""Longest side of a preview, in pixels."""
PREVIEW_INTERVAL_S = 0.25
"""Least time between two previews of one job: four a second at most."""
PREVIEW_QUALITY = 80


class PreviewGate:
    """Decides which of a job's previews go out, and encodes them."""

    def __init__(self, clock: Clock, interval_s: float = PREVIEW_INTERVAL_S) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._last_sent: float | None = None
        self._pending: object | None = None

    async def offer(self, pixels: object | None) -> bytes | None:
        """The JPEG to send with the provider's next progress event, whose preview is
        ``pixels`` (``None`` for none): the latest preview not yet sent, once the interval
        since the last one has passed; ``None`` until then or when it is not an image.
        A preview that came too soon thus goes out with a later event, unless a newer
        one replaced it."""
        if pixels is not None:
            self._pending = pixels
        if self._pending is None or not self._due():
            return None
        pending, self._pending = self._pending, None
        return await self.encode(pending)

    def _due(self) -> bool:
        now = self._clock.monotonic()
        if self._last_sent is not None and now - self._last_sent < self._interval_s:
            return False
        self._last_sent = now
        return True

    async def encode(self, pixels: object) -> bytes | None:
        """``pixels`` (RGB uint8, H x W x 3) as a small JPEG; ``None`` (logged) when the
        provider's preview is not such an image: a bad preview never fails the job."""
        if not (
            isinstance(pixels, np.ndarray)
            and pixels.dtype == np.uint8
            and pixels.ndim == 3
            and pixels.shape[2] == 3
            and min(pixels.shape[:2]) > 0
        ):
            described = getattr(pixels, "shape", type(pixels).__name__)
            log.warning("dropping a provider preview that is not an RGB uint8 image: %s", described)
            return None
        rgb: NDArray[np.uint8] = pixels
        return await off_loop(lambda: preview_jpeg(rgb), size=rgb.nbytes)


def preview_jpeg(pixels: NDArray[np.uint8]) -> bytes:
    """``pixels`` shrunk to fit :data:`PREVIEW_MAX_SIDE` (never enlarged), as JPEG."""
    return encode_image(shrink_to_fit(pixels, PREVIEW_MAX_SIDE), "JPEG", PREVIEW_QUALITY)


def shrink_to_fit(pixels: NDArray[np.uint8], max_side: int) -> NDArray[np.uint8]:
    """``pixels`` scaled down, aspect kept, so that its longest side is ``max_side``."""
    height, width = pixels.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return pixels
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
