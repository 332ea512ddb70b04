"""Job contexts for tests: what the server would hand a provider with each request."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from .._context import SYSTEM_CLOCK, Clock, EncodedImage, JobContext
from .._images import encode_png
from .._requests import EditRequest, InpaintRequest

ContextFactory = Callable[[EditRequest], JobContext]
"""Builds the context of each job a conformance check runs."""

_job_numbers = itertools.count(1)


def sample_context(
    request: EditRequest,
    *,
    job_id: str | None = None,
    timeout: float | None = 60.0,
    clock: Clock = SYSTEM_CLOCK,
    trace_headers: dict[str, str] | None = None,
    image_url: str | None = None,
    mask_url: str | None = None,
) -> JobContext:
    """The context the server would build for ``request``: a fresh job id, a deadline
    ``timeout`` seconds from now on ``clock``, and the inputs encoded as PNG (the mask
    too, for inpaint; arrays that cannot be images are left out)."""
    mask = None
    if isinstance(request, InpaintRequest):
        mask = _png(request.mask)
    return JobContext(
        job_id=job_id if job_id is not None else f"job_test{next(_job_numbers):06d}",
        deadline=None if timeout is None else clock.monotonic() + timeout,
        clock=clock,
        trace_headers=trace_headers or {},
        image=_png(request.image),
        mask=mask,
        image_url=image_url,
        mask_url=mask_url,
    )


def contexts_on(clock: Clock, *, timeout: float | None = 60.0) -> ContextFactory:
    """A factory of :func:`sample_context` contexts whose deadlines run on ``clock``."""

    def build(request: EditRequest) -> JobContext:
        return sample_context(request, clock=clock, timeout=timeout)

    return build


def _png(pixels: NDArray[np.generic]) -> EncodedImage | None:
    # Tests also send malformed arrays (to see them rejected); those have no encoding.
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        return None
    return EncodedImage(encode_png(pixels.astype(np.uint8, copy=False)), "image/png")
