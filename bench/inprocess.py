"""The service's pixel work without the service: the same functions, in this process.

Decode, mask preparation, compositing and encoding run inline on the caller's thread;
the provider runs as the server runs it, through ``OpenCVProvider.run`` and its worker
pool. What the service adds on top of this is its overhead.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from dataclasses import dataclass

from retouch.providers.opencv import OpenCVProvider
from retouch.sdk import InpaintRequest, JobContext, Result, composite
from retouch.server.config import ServerConfig
from retouch.server.imaging import (
    DEFAULT_QUALITY,
    decode_image,
    decode_mask,
    encode_image,
    prepare_mask,
)

from .workload import Workload

STAGES = ("decode", "inpaint", "composite", "encode")


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Milliseconds spent in each stage of one job."""

    decode: float
    inpaint: float
    composite: float
    encode: float

    @property
    def total(self) -> float:
        return self.decode + self.inpaint + self.composite + self.encode


class InProcessPipeline:
    """Runs decode -> inpaint -> composite -> encode on one workload, timing each stage."""

    def __init__(self, provider: OpenCVProvider) -> None:
        self._provider = provider
        self._model = provider.manifest.models[0]
        self._max_pixels = ServerConfig().max_pixels

    async def run(self, workload: Workload) -> StageTimes:
        started = time.perf_counter()
        image = decode_image(workload.image_png, field="image", max_pixels=self._max_pixels)
        raw = decode_mask(
            workload.mask_png,
            field="mask",
            size=(image.width, image.height),
            max_pixels=self._max_pixels,
        )
        mask = prepare_mask(raw, invert=False, grow_px=0, feather_px=0)
        decoded = time.perf_counter()
        request = InpaintRequest(image=image.pixels, mask=mask.binary, model=self._model, seed=0)
        result: Result | None = None
        async with aclosing(self._provider.run(request, JobContext("bench"))) as events:
            async for event in events:
                if isinstance(event, Result):
                    result = event
        if result is None:
            raise RuntimeError("the OpenCV provider ended without a result")
        inpainted = time.perf_counter()
        # As the server does it: into the decoded input, then encoded in place.
        out = composite(image.pixels, result.image, mask.alpha, out=image.pixels)
        composited = time.perf_counter()
        encode_image(out, "PNG", DEFAULT_QUALITY, in_place=True)
        encoded = time.perf_counter()
        return StageTimes(
            decode=1000 * (decoded - started),
            inpaint=1000 * (inpainted - decoded),
            composite=1000 * (composited - inpainted),
            encode=1000 * (encoded - composited),
        )
