"""The OpenCV provider: validates each request, then runs the pixel work in threads
(a tiny inpaint at once, on the event loop)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from importlib import metadata

import numpy as np

from retouch.sdk import (
    CostModel,
    EditRequest,
    EnhanceKind,
    EnhanceRequest,
    Event,
    Health,
    HealthReport,
    InpaintRequest,
    JobContext,
    Manifest,
    Operation,
    OutpaintRequest,
    ProgressReporter,
    ProviderRejected,
    Result,
    WorkerPool,
)

from . import _enhance
from ._config import DEFAULT_MAX_WORKERS, OpenCVConfig
from ._inpaint import METHODS, inpaint
from ._outpaint import outpaint

MAX_PIXELS = 16_777_216
"""Largest input, and largest inpaint/outpaint output: 4096 x 4096."""
MAX_UPSCALE_PIXELS = 67_108_864
"""Largest upscale output: 8192 x 8192, i.e. a 4096 x 4096 input doubled."""
INLINE_MAX_PIXELS = 128 * 128
INLINE_MAX_COST = 1024 * 3**2
"""An inpaint of at most :data:`INLINE_MAX_PIXELS` whose masked pixels times radius²
are at most this runs on the event loop, not in a worker thread: cv2.inpaint's work
grows with both, and this much of it takes 0.3-0.9 ms on a 2-core host, about what
the hop to a worker thread and back costs a job in latency there."""
UPSCALE_MODEL = "lanczos4+unsharp"
DENOISE_MODEL = "fast-nl-means"
SHARPEN_MODEL = "unsharp-mask"


def _version() -> str:
    try:
        return metadata.version("retouch-opencv")
    except metadata.PackageNotFoundError:
        return "0+unknown"


MANIFEST = Manifest(
    name="opencv",
    version=_version(),
    description=(
        "Classical CPU image editing with OpenCV: inpainting (Telea or Navier-Stokes), "
        "outpainting by mirroring into a smooth fill, Lanczos upscaling, non-local-means "
        "denoising and unsharp-mask sharpening."
    ),
    operations=frozenset(Operation),
    models=tuple(METHODS),
    # Enhance does not use the inpainting methods: name what each kind runs.
    task_models={
        "enhance.upscale": (UPSCALE_MODEL,),
        "enhance.denoise": (DENOISE_MODEL,),
        "enhance.sharpen": (SHARPEN_MODEL,),
    },
    max_pixels=MAX_PIXELS,
    # Until start() reads the config; then the configured worker count.
    capacity=DEFAULT_MAX_WORKERS,
    supports_mask=True,
    supports_outpaint=True,
    upscale_factors=(2, 4),
    cost=CostModel(credits_per_job=1),
    quality_rank=1,
    remote=False,
)

Work = Callable[[ProgressReporter], Result]


class OpenCVProvider:
    """retouch's built-in provider: classical algorithms, no model downloads, no GPU.

    Config keys (all optional): ``inpaint_radius`` (1..50, default 3) and
    ``max_workers`` (threads for pixel work, 1..64). Jobs run on the loop's default
    executor until :meth:`start` has created the provider's own.
    """

    def __init__(self) -> None:
        self._config = OpenCVConfig()
        self._workers = WorkerPool("retouch-opencv")
        self._manifest = MANIFEST

    @property
    def manifest(self) -> Manifest:
        """What this provider offers; its capacity is the configured worker count, so
        the scheduler admits no job that would wait inside the pool while reported
        running."""
        return self._manifest

    @property
    def config(self) -> OpenCVConfig:
        """The settings in force."""
        return self._config

    async def start(self, config: Mapping[str, object]) -> None:
        """Validate ``config`` (ValueError names each bad key) and start the workers."""
        self._config = OpenCVConfig.from_mapping(config)
        self._manifest = dataclasses.replace(MANIFEST, capacity=self._config.max_workers)
        self._workers.start(self._config.max_workers)

    async def aclose(self) -> None:
        """Stop the workers; queued jobs are dropped, running ones stop at their next check."""
        self._workers.close()

    async def health(self) -> HealthReport:
        """Always healthy: everything runs in-process."""
        return HealthReport(Health.HEALTHY)

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        """Progress from the worker thread (or, for a tiny inpaint, the loop), then the
        result."""
        work = self._plan(request)
        inline = _tiny_inpaint(request, self._config.inpaint_radius)
        async with aclosing(self._workers.stream(work, inline=inline)) as events:
            async for event in events:
                yield event

    def _plan(self, request: EditRequest) -> Work:
        """Validate ``request`` and return the blocking work that carries it out."""
        MANIFEST.check_image(request.image)
        models = MANIFEST.models_for(request.task)
        if request.model not in models:
            raise ProviderRejected(
                f"unknown model {request.model!r}; the opencv provider offers "
                f"{', '.join(models)} for {request.task}",
                field="model",
            )
        radius = self._config.inpaint_radius
        if isinstance(request, InpaintRequest):
            return _inpaint_work(request, radius)
        if isinstance(request, OutpaintRequest):
            return _outpaint_work(request, radius)
        return _enhance_work(request)


def _tiny_inpaint(request: EditRequest, radius: int) -> bool:
    if not isinstance(request, InpaintRequest):
        return False
    height, width = request.image.shape[:2]
    if height * width > INLINE_MAX_PIXELS:
        return False
    return int(np.count_nonzero(request.mask)) * radius**2 <= INLINE_MAX_COST


def _inpaint_work(request: InpaintRequest, radius: int) -> Work:
    image, mask = request.image, request.mask
    if mask.dtype != "uint8" or mask.shape != image.shape[:2]:
        raise ProviderRejected(
            f"the mask must be uint8 of shape {image.shape[:2]}, got {mask.dtype} {mask.shape}",
            field="mask",
        )
    method = METHODS[request.model]

    def work(reporter: ProgressReporter) -> Result:
        out = inpaint(image, mask, method=method, radius=radius, reporter=reporter)
        return Result(out, {"algorithm": request.model})

    return work


def _outpaint_work(request: OutpaintRequest, radius: int) -> Work:
    width, height = request.output_size
    if width * height > MAX_PIXELS:
        raise ProviderRejected(
            f"the outpainted image would be {width} x {height}, over the opencv provider's "
            f"{MAX_PIXELS} pixels: add less padding",
            field="padding",
        )
    image, padding, method = request.image, request.padding, METHODS[request.model]

    def work(reporter: ProgressReporter) -> Result:
        out = outpaint(image, padding, method=method, radius=radius, reporter=reporter)
        return Result(out, {"algorithm": f"mirror+{request.model}"})

    return work


def _enhance_work(request: EnhanceRequest) -> Work:
    image, strength = request.image, request.strength
    if not 0.0 <= strength <= 1.0:
        raise ProviderRejected(f"strength must be in 0..1, got {strength}", field="strength")
    if request.kind is EnhanceKind.UPSCALE:
        scale = request.scale
        if scale not in MANIFEST.upscale_factors:
            raise ProviderRejected(
                f"cannot upscale by {scale}; the opencv provider upscales by "
                f"{' or '.join(map(str, MANIFEST.upscale_factors))}",
                field="scale",
            )
        width, height = request.output_size
        if width * height > MAX_UPSCALE_PIXELS:
            raise ProviderRejected(
                f"upscaling by {scale} would make {width} x {height}, over the opencv "
                f"provider's {MAX_UPSCALE_PIXELS} pixels (8192 x 8192): use a smaller factor",
                field="scale",
            )

        def upscale_work(reporter: ProgressReporter) -> Result:
            out = _enhance.upscale(image, scale, reporter=reporter)
            return Result(out, {"algorithm": UPSCALE_MODEL})

        return upscale_work
    if request.kind is EnhanceKind.DENOISE:

        def denoise_work(reporter: ProgressReporter) -> Result:
            out = _enhance.denoise(image, strength, reporter=reporter)
            return Result(out, {"algorithm": DENOISE_MODEL})

        return denoise_work

    def sharpen_work(reporter: ProgressReporter) -> Result:
        out = _enhance.sharpen(image, strength, reporter=reporter)
        return Result(out, {"algorithm": SHARPEN_MODEL})

    return sharpen_work
