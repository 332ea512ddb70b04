"""The PatchMatch provider: validates each request, then fills holes in worker threads."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from importlib import metadata

from retouch.sdk import (
    CostModel,
    EditRequest,
    Event,
    Health,
    HealthReport,
    InpaintRequest,
    JobContext,
    Manifest,
    Operation,
    ProgressReporter,
    ProviderRejected,
    Result,
    WorkerPool,
)

from ._config import DEFAULT_MAX_WORKERS, PatchMatchConfig
from ._inpaint import inpaint
from ._patchmatch import Settings

MAX_PIXELS = 4_194_304
"""Largest input: 2048 x 2048. Beyond that a job takes many seconds of CPU, which a
classical fill does not justify."""

MODEL = "patchmatch"


def _version() -> str:
    try:
        return metadata.version("retouch-patchmatch")
    except metadata.PackageNotFoundError:
        return "0+unknown"


MANIFEST = Manifest(
    name="patchmatch",
    version=_version(),
    description=(
        "Exemplar-based CPU inpainting: a multi-scale PatchMatch fills holes with "
        "patches copied from around them, so texture and regular structure stay sharp "
        "where diffusion (the opencv provider) blurs them. About a second for a "
        "512 x 512 image with a 10 % hole."
    ),
    operations=frozenset({Operation.INPAINT}),
    models=(MODEL,),
    max_pixels=MAX_PIXELS,
    # Until start() reads the config; then the configured worker count.
    capacity=DEFAULT_MAX_WORKERS,
    supports_mask=True,
    cost=CostModel(credits_per_job=2),
    remote=False,
    quality_rank=2,
)

Work = Callable[[ProgressReporter], Result]


class PatchMatchProvider:
    """Exemplar-based inpainting on the CPU; no model downloads, no GPU.

    Config keys (all optional): ``patch_size`` (odd, 3..15, default 7) and
    ``max_workers`` (threads for pixel work, 1..64). Jobs run on the loop's default
    executor until :meth:`start` has created the provider's own.
    """

    def __init__(self) -> None:
        self._config = PatchMatchConfig()
        self._workers = WorkerPool("retouch-patchmatch")
        self._manifest = MANIFEST

    @property
    def manifest(self) -> Manifest:
        """What this provider offers; its capacity is the configured worker count, so
        the scheduler admits no job that would wait inside the pool while reported
        running."""
        return self._manifest

    @property
    def config(self) -> PatchMatchConfig:
        """The settings in force."""
        return self._config

    async def start(self, config: Mapping[str, object]) -> None:
        """Validate ``config`` (ValueError names each bad key) and start the workers."""
        self._config = PatchMatchConfig.from_mapping(config)
        self._manifest = dataclasses.replace(MANIFEST, capacity=self._config.max_workers)
        self._workers.start(self._config.max_workers)

    async def aclose(self) -> None:
        """Stop the workers; queued jobs are dropped, running ones stop at their next check."""
        self._workers.close()

    async def health(self) -> HealthReport:
        """Always healthy: everything runs in-process."""
        return HealthReport(Health.HEALTHY)

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        """Progress from the worker thread (one report per pyramid level and round),
        then the result."""
        async with aclosing(self._workers.stream(self._plan(request))) as events:
            async for event in events:
                yield event

    def _plan(self, request: EditRequest) -> Work:
        """Validate ``request`` and return the blocking work that carries it out."""
        if request.operation not in MANIFEST.operations:
            raise ProviderRejected(
                f"the patchmatch provider does not {request.operation.value}; it only inpaints",
                field="operation",
            )
        MANIFEST.check_image(request.image)
        if request.model != MODEL:
            raise ProviderRejected(
                f"unknown model {request.model!r}; the patchmatch provider offers {MODEL!r}",
                field="model",
            )
        settings = Settings(patch_radius=self._config.patch_radius)
        metadata = {"algorithm": "patchmatch", "patch_size": str(self._config.patch_size)}
        assert isinstance(request, InpaintRequest)
        return _inpaint_work(request, settings, metadata)


def _inpaint_work(request: InpaintRequest, settings: Settings, metadata: dict[str, str]) -> Work:
    image, mask, seed = request.image, request.mask, request.seed
    if mask.dtype != "uint8" or mask.shape != image.shape[:2]:
        raise ProviderRejected(
            f"the mask must be uint8 of shape {image.shape[:2]}, got {mask.dtype} {mask.shape}",
            field="mask",
        )

    def work(reporter: ProgressReporter) -> Result:
        out = inpaint(image, mask, seed=seed, settings=settings, reporter=reporter)
        return Result(out, metadata)

    return work
