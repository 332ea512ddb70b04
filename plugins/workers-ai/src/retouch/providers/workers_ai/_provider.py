"""The Workers AI provider: one synchronous call per job, PNG bytes back.

The model runs while the call is open, so there is nothing to poll and nothing to
cancel upstream: a cancelled job drops the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from importlib import metadata

from retouch.sdk import (
    ConfigReader,
    CostModel,
    EditRequest,
    Event,
    InpaintRequest,
    JobContext,
    Manifest,
    Operation,
    Progress,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    Result,
    Secret,
    Usage,
    decode_image,
)
from retouch.sdk.http import RemoteProvider, Response, bearer

from ._config import HTTP_DEFAULTS, WorkersAIConfig
from ._wire import parse_errors, request_body

PROVIDER = "workers-ai"
MODEL = "stable-diffusion-v1-5-inpainting"
"""The model name callers use."""
MAX_PIXELS = 4_194_304
"""Largest input: 2048 x 2048, the model's largest output (and the image travels as
a JSON array, about 3.6 bytes per byte of PNG)."""
REQUESTS_PER_MINUTE = 720.0
"""Workers AI's documented limit for text-to-image models."""

_TOO_LARGE = 3006
_NO_SUCH_MODEL = frozenset({5007, 3042})


def _version() -> str:
    try:
        return metadata.version("retouch-workers-ai")
    except metadata.PackageNotFoundError:
        return "0+unknown"


MANIFEST = Manifest(
    name=PROVIDER,
    version=_version(),
    description=(
        "Stable Diffusion 1.5 inpainting on Cloudflare Workers AI: prompt-guided fills at "
        "up to 2048 x 2048, at most 20 steps."
    ),
    operations=frozenset({Operation.INPAINT}),
    models=(MODEL,),
    max_pixels=MAX_PIXELS,
    supports_mask=True,
    cost=CostModel(credits_per_job=2),
    remote=True,
    quality_rank=2,
    requests_per_minute=REQUESTS_PER_MINUTE,
)


class WorkersAIProvider(RemoteProvider):
    """Inpainting with ``@cf/runwayml/stable-diffusion-v1-5-inpainting``. See the
    plugin's README for config."""

    MANIFEST = MANIFEST
    HTTP_DEFAULTS = HTTP_DEFAULTS

    _settings: WorkersAIConfig | None = None

    @property
    def settings(self) -> WorkersAIConfig:
        """The provider's own settings (after ``start``)."""
        if self._settings is None:
            raise ProviderUnavailable("the workers-ai provider has not been started")
        return self._settings

    def configure(self, read: ConfigReader) -> None:
        """Read ``account_id``, ``api_key``, ``model_id`` and ``default_prompt``."""
        self._settings = WorkersAIConfig.read(read)

    def auth_headers(self) -> Mapping[str, str | Secret]:
        """The bearer token; the client keeps it out of every message."""
        return {"Authorization": bearer(self.settings.api_key)}

    async def execute(
        self, request: EditRequest, context: JobContext
    ) -> AsyncGenerator[Event, None]:
        """Send the job, then the result (the base fits it to the request)."""
        if not isinstance(request, InpaintRequest):  # the manifest offers inpaint only
            raise ProviderRejected("the workers-ai provider only inpaints", field="operation")
        settings = self.settings
        yield Progress(0.0, "sending to workers ai")
        body = await asyncio.to_thread(request_body, request, context, settings.default_prompt)
        answer = await self.http.request(
            "POST",
            settings.run_path,
            context=context,
            data=body,
            headers={"Content-Type": "application/json"},
            expect="image/png",
            classify=_classify,
        )
        yield Progress(0.9, "decoding the result")
        image = await asyncio.to_thread(decode_image, answer.body, provider=PROVIDER)
        yield Result(
            image, {"model": settings.model_id, "seed": str(request.seed)}, usage=Usage(images=1)
        )


def _classify(response: Response) -> ProviderError | None:
    """Errors the envelope's codes say more precisely than the HTTP status."""
    try:
        errors = parse_errors(response.json())
    except ProviderError:
        return None
    codes = {error.code for error in errors}
    said = "; ".join(error.message for error in errors if error.message)
    if _TOO_LARGE in codes or response.status == 413:
        return ProviderRejected(
            f"workers ai refused the request as too large ({said or 'HTTP 413'}); send a "
            f"smaller image",
            field="image",
        )
    if codes & _NO_SUCH_MODEL:
        return ProviderUnavailable(
            f"workers ai does not know the configured model ({said}); the operator should "
            f"check the provider's model_id"
        )
    return None
