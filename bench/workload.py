"""The bench's inputs: a photo with a centred square hole, at two sizes.

The photo is scikit-image's astronaut (bundled with its wheel, nothing is downloaded),
resized with INTER_AREA and encoded with OpenCV's default PNG settings, as a client
would most likely send it.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage import data

from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb

HOLE_FRACTION = 0.10
PROVIDER = "opencv"
MODEL = "telea"
"""Named in every request: the targets are about the OpenCV inpaint the in-process
baseline runs, whatever the router would pick among the installed providers."""


@dataclass(frozen=True, slots=True)
class Workload:
    """An inpaint input: PNG image and PNG mask of the same size."""

    side: int
    image_png: bytes
    mask_png: bytes
    hole_side: int

    @property
    def request_bytes(self) -> int:
        return len(self.image_png) + len(self.mask_png)

    def describe(self) -> str:
        coverage = self.hole_side**2 / self.side**2
        return (
            f"{self.side}x{self.side} RGB PNG ({len(self.image_png) / 1000:.1f} kB) + centred "
            f"{self.hole_side}x{self.hole_side} mask ({coverage:.1%}, "
            f"{len(self.mask_png) / 1000:.1f} kB PNG)"
        )

    def request(self, provider: str = PROVIDER, model: str = MODEL) -> pb.InpaintRequest:
        """An Inpaint call with inline output and a fresh id; empty names let the server route."""
        return pb.InpaintRequest(
            request_id=f"bench-{uuid.uuid4().hex}",
            image=common_pb2.ImageInput(data=self.image_png),
            mask=common_pb2.ImageInput(data=self.mask_png),
            output=common_pb2.OutputOptions(inline=True),
            provider=common_pb2.ProviderChoice(provider=provider, model=model),
        )


def make_workload(side: int, hole_fraction: float = HOLE_FRACTION) -> Workload:
    """The astronaut at ``side`` x ``side`` with a centred square covering ``hole_fraction``."""
    astronaut: NDArray[np.uint8] = data.astronaut()  # type: ignore[no-untyped-call]
    resized = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    pixels = np.asarray(resized, dtype=np.uint8)
    hole = round(side * math.sqrt(hole_fraction))
    mask = np.zeros((side, side), np.uint8)
    start = (side - hole) // 2
    mask[start : start + hole, start : start + hole] = 255
    return Workload(
        side=side,
        image_png=_png(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)),
        mask_png=_png(mask),
        hole_side=hole,
    )


def _png(pixels: cv2.typing.MatLike) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError("OpenCV could not encode the bench image")
    return bytes(encoded.tobytes())
