"""The v2beta stable-image services this provider calls, with their documented limits.

Figures come from the API reference (https://platform.stability.ai/docs/api-reference,
the "Edit" and "Upscale" sections) and the pricing page
(https://platform.stability.ai/pricing); credits are Stability's own (1 credit = 1 US
cent) and are only charged for successful generations.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

PROMPT_MAX_CHARS = 10_000
SEED_MAX = 4_294_967_294
"""Largest seed the API takes; 0 asks it to pick one (it reports the one it used)."""
OUTPAINT_MAX_PX = 2_000
"""Most pixels outpaint adds on any one side."""
GROW_MASK_MAX = 20
"""grow_mask's ceiling on erase (inpaint allows 100); one bound keeps the config simple."""


class Service(enum.Enum):
    """A stable-image endpoint; the value is its path under the API's base URL."""

    INPAINT = "/v2beta/stable-image/edit/inpaint"
    ERASE = "/v2beta/stable-image/edit/erase"
    OUTPAINT = "/v2beta/stable-image/edit/outpaint"
    UPSCALE_FAST = "/v2beta/stable-image/upscale/fast"
    UPSCALE_CONSERVATIVE = "/v2beta/stable-image/upscale/conservative"
    UPSCALE_CREATIVE = "/v2beta/stable-image/upscale/creative"

    @property
    def limits(self) -> Limits:
        """What this service accepts and returns."""
        return _LIMITS[self]

    @property
    def label(self) -> str:
        """The service's short name, as used in config and messages (``upscale/fast``)."""
        return self.value.removeprefix("/v2beta/stable-image/").removeprefix("edit/")


RESULTS_PATH = "/v2beta/results/{id}"
"""Where an asynchronous generation (creative upscale) is fetched: 202 while it runs,
200 with the image once done."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The documented bounds of one service."""

    credits: int
    """Stability credits per successful generation (the pricing page's figure)."""
    min_side: int
    max_side: int | None
    min_pixels: int
    max_pixels: int
    max_aspect: float | None = None
    """Widest ratio of long to short side, when the service bounds it (2.5 = 1:2.5..2.5:1)."""
    output_pixels: int | None = None
    """Pixels of what the service returns when that is fixed rather than input-derived
    (conservative and creative upscales answer about 4 megapixels)."""
    needs_prompt: bool = False
    asynchronous: bool = False

    def problem(self, width: int, height: int) -> str | None:
        """Why a ``width`` x ``height`` input is outside these limits, or ``None``."""
        pixels = width * height
        if min(width, height) < self.min_side:
            return f"every side must be at least {self.min_side} pixels"
        if self.max_side is not None and max(width, height) > self.max_side:
            return f"no side may exceed {self.max_side} pixels"
        if not self.min_pixels <= pixels <= self.max_pixels:
            return f"it must have {self.min_pixels:,} to {self.max_pixels:,} pixels"
        if self.max_aspect is not None and max(width, height) > self.max_aspect * min(
            width, height
        ):
            return f"its aspect ratio must be between 1:{self.max_aspect} and {self.max_aspect}:1"
        return None


_EDIT = Limits(credits=0, min_side=64, max_side=None, min_pixels=4_096, max_pixels=9_437_184)
"""What the edit services share: sides of 64 px or more, up to about 9.4 megapixels."""
_FOUR_MEGAPIXELS = 4 * 1024 * 1024

_LIMITS = {
    Service.INPAINT: replace(_EDIT, credits=3, needs_prompt=True),
    Service.ERASE: replace(_EDIT, credits=3),
    Service.OUTPAINT: replace(_EDIT, credits=4, max_aspect=2.5),
    Service.UPSCALE_FAST: Limits(
        credits=2, min_side=32, max_side=1_536, min_pixels=1_024, max_pixels=1_048_576
    ),
    Service.UPSCALE_CONSERVATIVE: replace(
        _EDIT, credits=40, max_aspect=2.5, output_pixels=_FOUR_MEGAPIXELS, needs_prompt=True
    ),
    Service.UPSCALE_CREATIVE: replace(
        _EDIT,
        credits=60,
        max_pixels=1_048_576,
        output_pixels=_FOUR_MEGAPIXELS,
        needs_prompt=True,
        asynchronous=True,
    ),
}

FAST_UPSCALE_FACTOR = 4
"""Fast upscale always multiplies each side by four."""

UPSCALERS = {
    "fast": Service.UPSCALE_FAST,
    "conservative": Service.UPSCALE_CONSERVATIVE,
    "creative": Service.UPSCALE_CREATIVE,
}
"""Config names of the upscale services."""
