"""What a provider is asked to do. Plain frozen dataclasses over NumPy arrays.

Images are ``uint8`` arrays of shape (height, width, 3) in RGB order. Masks are
``uint8`` arrays of shape (height, width) where 255 means "replace" and 0 "keep"; the
server has already applied the caller's invert/grow options and binarised them.

The arrays are the host's: a provider reads them while it runs, never writes them, and
keeps no reference once it has yielded its Result (retouch's server then composites
the result into the image's own buffer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ._manifest import EnhanceKind, Operation

RGBImage = NDArray[np.uint8]
Mask = NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Knobs for generative providers; ``None`` means "provider default"."""

    prompt: str = ""
    negative_prompt: str = ""
    strength: float | None = None
    guidance_scale: float | None = None
    steps: int | None = None


@dataclass(frozen=True, slots=True)
class InpaintRequest:
    """Replace the pixels of ``image`` where ``mask`` is 255."""

    image: RGBImage
    mask: Mask
    model: str
    seed: int
    params: GenerationParams = field(default_factory=GenerationParams)

    operation = Operation.INPAINT
    task = "inpaint"
    """The key of :attr:`Manifest.task_models` this request's model comes from."""


@dataclass(frozen=True, slots=True)
class Padding:
    """Pixels to add on each side of a canvas."""

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    def __post_init__(self) -> None:
        if min(self.left, self.right, self.top, self.bottom) < 0:
            raise ValueError("padding cannot be negative")

    @property
    def is_empty(self) -> bool:
        return not (self.left or self.right or self.top or self.bottom)


@dataclass(frozen=True, slots=True)
class OutpaintRequest:
    """Grow ``image`` by ``padding`` and fill the new area."""

    image: RGBImage
    padding: Padding
    model: str
    seed: int
    params: GenerationParams = field(default_factory=GenerationParams)

    operation = Operation.OUTPAINT
    task = "outpaint"

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the result."""
        height, width = self.image.shape[:2]
        p = self.padding
        return width + p.left + p.right, height + p.top + p.bottom


@dataclass(frozen=True, slots=True)
class EnhanceRequest:
    """Upscale (by ``scale``), denoise or sharpen (by ``strength``, 0..1) ``image``."""

    image: RGBImage
    kind: EnhanceKind
    model: str
    seed: int
    scale: int = 1
    strength: float = 0.5

    operation = Operation.ENHANCE

    @property
    def task(self) -> str:
        """``"enhance.<kind>"``: enhance models may differ by kind."""
        return f"enhance.{self.kind.value}"

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the result."""
        height, width = self.image.shape[:2]
        factor = self.scale if self.kind is EnhanceKind.UPSCALE else 1
        return width * factor, height * factor


EditRequest = InpaintRequest | OutpaintRequest | EnhanceRequest
