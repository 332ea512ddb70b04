"""A deterministic in-memory provider for tests of code that drives providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence

import numpy as np

from .._compositing import composite
from .._context import JobContext
from .._errors import ProviderError, ProviderRejected
from .._events import Event, Progress, Result
from .._manifest import CostModel, EnhanceKind, Manifest, Operation
from .._provider import Health, HealthReport
from .._requests import (
    EditRequest,
    EnhanceRequest,
    InpaintRequest,
    OutpaintRequest,
    RGBImage,
)

_DEFAULT_COST = CostModel(credits_per_job=1)


class FakeProvider:
    """A provider that does trivial, predictable pixel work, for tests.

    Inpaint fills the masked area with the flat colour ``fill`` (composited, so unmasked
    pixels are kept), outpaint fills the new margin with it, upscale repeats pixels
    (nearest neighbour) and denoise/sharpen return a copy. Every job yields ``steps``
    :class:`~retouch.sdk.Progress` events, awaiting ``step_delay`` seconds before each,
    then one :class:`~retouch.sdk.Result`.

    Knobs for the situations a test needs:

    - ``fail_with``: raised instead of the result, after ``fail_after`` progress events
      (0: before any event), e.g. ``ProviderUnavailable("down")`` to exercise fallback
      and refunds.
    - ``release``: when given, each job waits for this event after its progress steps,
      so a test holds jobs running for as long as it likes without sleeping.
    - ``health_report``: assign to change what :meth:`health` answers.

    Bookkeeping a test can assert on: ``calls`` (jobs started, counted when a job's
    stream is first iterated), ``requests`` and ``contexts`` (their requests and job
    contexts, in order), ``cancelled`` (jobs closed before they finished), ``active``
    (jobs running now), ``config`` (what :meth:`start` received), ``started`` and
    ``closed``.
    """

    def __init__(
        self,
        name: str = "fake",
        operations: Iterable[Operation] = tuple(Operation),
        *,
        models: Sequence[str] = ("fake",),
        fail_with: ProviderError | None = None,
        fail_after: int = 0,
        step_delay: float = 0.0,
        steps: int = 3,
        max_pixels: int = 16_777_216,
        cost: CostModel = _DEFAULT_COST,
        upscale_factors: Sequence[int] = (2, 4),
        enhance_kinds: Iterable[EnhanceKind] = tuple(EnhanceKind),
        remote: bool = False,
        fill: tuple[int, int, int] = (255, 0, 255),
        release: asyncio.Event | None = None,
        quality_rank: int = 0,
        requests_per_minute: float | None = None,
    ) -> None:
        if steps < 0 or fail_after < 0 or step_delay < 0:
            raise ValueError("steps, fail_after and step_delay cannot be negative")
        ops = frozenset(operations)
        kinds = frozenset(enhance_kinds)
        self._manifest = Manifest(
            name=name,
            version="1.0.0",
            description="Deterministic in-memory provider for tests",
            operations=ops,
            models=tuple(models),
            max_pixels=max_pixels,
            supports_mask=Operation.INPAINT in ops,
            supports_outpaint=Operation.OUTPAINT in ops,
            upscale_factors=(
                tuple(upscale_factors)
                if Operation.ENHANCE in ops and EnhanceKind.UPSCALE in kinds
                else ()
            ),
            enhance_kinds=kinds,
            cost=cost,
            remote=remote,
            quality_rank=quality_rank,
            requests_per_minute=requests_per_minute,
        )
        self.fail_with = fail_with
        self.fail_after = fail_after
        self.step_delay = step_delay
        self.steps = steps
        self.fill = fill
        self.release = release
        self.health_report = HealthReport(Health.HEALTHY)
        self.calls = 0
        self.requests: list[EditRequest] = []
        self.contexts: list[JobContext] = []
        self.cancelled = 0
        self.active = 0
        self.config: Mapping[str, object] | None = None
        self.started = False
        self.closed = False

    @property
    def manifest(self) -> Manifest:
        """The manifest built from the constructor's arguments."""
        return self._manifest

    async def start(self, config: Mapping[str, object]) -> None:
        """Accept any config and remember it in ``config``."""
        self.config = dict(config)
        self.started = True

    async def aclose(self) -> None:
        """Mark the provider closed."""
        self.closed = True

    async def health(self) -> HealthReport:
        """Answer ``health_report``."""
        return self.health_report

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        """Yield ``steps`` progress events and the result, or raise ``fail_with``."""
        self.calls += 1
        self.requests.append(request)
        self.contexts.append(context)
        self.active += 1
        finished = False
        try:
            self._validate(request)
            for step in range(1, self.steps + 1):
                if self.fail_with is not None and step > self.fail_after:
                    raise self.fail_with
                await asyncio.sleep(self.step_delay)
                yield Progress(step / self.steps, f"step {step}/{self.steps}")
            if self.fail_with is not None:
                raise self.fail_with
            if self.release is not None:
                await self.release.wait()
            finished = True
            yield Result(
                self._edit(request),
                {
                    "provider": self._manifest.name,
                    "model": request.model,
                    "seed": str(request.seed),
                },
            )
        except ProviderError:
            finished = True
            raise
        finally:
            self.active -= 1
            if not finished:
                self.cancelled += 1

    def _validate(self, request: EditRequest) -> None:
        manifest = self._manifest
        if not manifest.can(request.operation):
            raise ProviderRejected(
                f"provider {manifest.name!r} does not {request.operation.value}",
                field="operation",
            )
        if request.model not in manifest.models_for(request.task):
            raise ProviderRejected(
                f"unknown model {request.model!r}; choose one of "
                f"{', '.join(manifest.models_for(request.task))}",
                field="model",
            )
        height, width = request.image.shape[:2]
        if height * width > manifest.max_pixels:
            raise ProviderRejected(
                f"image has {height * width} pixels; at most {manifest.max_pixels} allowed",
                field="image",
            )
        if isinstance(request, EnhanceRequest) and request.kind not in manifest.enhance_kinds:
            raise ProviderRejected(
                f"provider {manifest.name!r} does not {request.kind.value}", field="kind"
            )
        if (
            isinstance(request, EnhanceRequest)
            and request.kind is EnhanceKind.UPSCALE
            and request.scale not in manifest.upscale_factors
        ):
            factors = ", ".join(str(f) for f in manifest.upscale_factors) or "none"
            raise ProviderRejected(
                f"cannot upscale by {request.scale}; supported factors: {factors}", field="scale"
            )

    def _edit(self, request: EditRequest) -> RGBImage:
        image = request.image
        fill = np.asarray(self.fill, dtype=np.uint8)
        if isinstance(request, InpaintRequest):
            return composite(image, np.broadcast_to(fill, image.shape).copy(), request.mask)
        if isinstance(request, OutpaintRequest):
            width, height = request.output_size
            canvas = np.empty((height, width, 3), dtype=np.uint8)
            canvas[...] = fill
            top, left = request.padding.top, request.padding.left
            canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
            return canvas
        if request.kind is EnhanceKind.UPSCALE:
            return np.repeat(np.repeat(image, request.scale, axis=0), request.scale, axis=1)
        return image.copy()
