"""The OpenAI provider: one image edit per job, the answer fitted back to the request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from importlib import metadata

from retouch.sdk import (
    ConfigReader,
    CostModel,
    EditRequest,
    EnhanceRequest,
    Event,
    InpaintRequest,
    JobContext,
    Manifest,
    Operation,
    OutpaintRequest,
    Progress,
    ProviderRejected,
    Result,
    Secret,
    Usage,
    decode_image,
    upload_image,
)
from retouch.sdk.http import FilePart, HttpConfig, HttpRuntime, RemoteProvider, bearer

from ._answers import GPT_IMAGE_1_PRICES, classify, edit_answer
from ._config import DEFAULT_BASE_URL, PROMPT_MAX_CHARS, OpenAIConfig
from ._images import alpha_mask_png, nearest_size, outpaint_canvas, shrink_for_upload

NAME = "openai"
MODEL = "gpt-image-1"
EDITS_PATH = "images/edits"
MAX_PIXELS = 16_777_216
"""Largest input (4096 x 4096): the model answers at most 1536 px a side anyway, so
larger inputs gain nothing but upload time."""
MAX_IMAGE_BYTES = 25 * 1024 * 1024
MAX_MASK_BYTES = 4 * 1024 * 1024
RESERVED_CREDITS = 40
"""Reserved per job: a high-quality 1536 x 1024 edit bills about 6,200 output tokens
($0.25) plus input tokens; one credit is one US cent."""


def _version() -> str:
    try:
        return metadata.version("retouch-openai")
    except metadata.PackageNotFoundError:
        return "0+unknown"


MANIFEST = Manifest(
    name=NAME,
    version=_version(),
    description=(
        "OpenAI's image edits with gpt-image-1 for inpainting and outpainting (the "
        "margin is masked on a grown canvas). The model treats the mask as guidance; "
        "pixels outside it are restored exactly. Charged by the tokens billed."
    ),
    operations=frozenset({Operation.INPAINT, Operation.OUTPAINT}),
    models=(MODEL,),
    max_pixels=MAX_PIXELS,
    supports_mask=True,
    supports_outpaint=True,
    cost=CostModel(credits_per_usd=100.0, metered_reserve=RESERVED_CREDITS),
    remote=True,
    quality_rank=6,
)


class OpenAIProvider(RemoteProvider):
    """OpenAI's ``POST /v1/images/edits`` with gpt-image-1, over HTTPS.

    Config: ``api_key_env`` names the environment variable holding the key (the server
    passes it as the ``api_key`` secret), the SDK's HTTP keys, and the keys of
    :class:`OpenAIConfig`. Pass ``runtime`` to control time and the network in tests.
    """

    MANIFEST = MANIFEST
    HTTP_DEFAULTS = HttpConfig(base_url=DEFAULT_BASE_URL, read_timeout=240.0, total_timeout=300.0)
    """An edit answers only when the image is done, which takes up to a couple of
    minutes, so the socket read timeout must outlast the whole generation."""

    def __init__(self, *, runtime: HttpRuntime | None = None) -> None:
        super().__init__(runtime=runtime)
        self._settings = OpenAIConfig()
        self._api_key: Secret | None = None

    @property
    def settings(self) -> OpenAIConfig:
        """The provider's own settings in force."""
        return self._settings

    def configure(self, read: ConfigReader) -> None:
        """Read the API key and the keys of :class:`OpenAIConfig`."""
        api_key = read.secret("api_key")
        self._api_key = api_key
        self._settings = OpenAIConfig.read(read)

    def auth_headers(self) -> Mapping[str, str | Secret]:
        """The bearer key, and the organization and project when configured."""
        assert self._api_key is not None  # configure ran first
        headers: dict[str, str | Secret] = {"authorization": bearer(self._api_key)}
        if self._settings.organization:
            headers["openai-organization"] = self._settings.organization
        if self._settings.project:
            headers["openai-project"] = self._settings.project
        return headers

    async def execute(
        self, request: EditRequest, context: JobContext
    ) -> AsyncGenerator[Event, None]:
        """One edit call; the base resizes the answer to the request and composites it."""
        if isinstance(request, EnhanceRequest):
            raise ProviderRejected("the openai provider does not enhance", field="operation")
        self._check(request)
        form = await asyncio.to_thread(self._form, request, context)
        yield Progress(0.05, "sending to OpenAI image edits")
        response = await self.http.request(
            "POST",
            EDITS_PATH,
            context=context,
            form=form,
            # The endpoint documents no idempotency key; this ties its logs to our job.
            headers={"x-client-request-id": context.job_id},
            expect="application/json",
            classify=classify,
        )
        edit = edit_answer(response)
        yield Progress(0.9, "decoding the result")
        image = await asyncio.to_thread(decode_image, edit.image, provider=NAME)
        details = {
            "model": request.model,
            "size": str(form["size"]),
            "quality": self._settings.quality,
        }
        request_id = response.headers.get("x-request-id")
        if request_id:
            details["request_id"] = request_id
        # Without a usage the server keeps the reserved estimate rather than charge nothing.
        usage = None
        if edit.usage is not None:
            usage = Usage(images=1, usd=edit.usage.usd(GPT_IMAGE_1_PRICES))
        yield Result(image, details, usage=usage)

    def _check(self, request: InpaintRequest | OutpaintRequest) -> None:
        """What the base's checks leave: the prompt's length and an outpaint's padding."""
        if len(request.params.prompt) > PROMPT_MAX_CHARS:
            raise ProviderRejected(
                f"the prompt has {len(request.params.prompt)} characters; OpenAI takes at "
                f"most {PROMPT_MAX_CHARS}",
                field="prompt",
            )
        if isinstance(request, OutpaintRequest) and request.padding.is_empty:
            raise ProviderRejected("outpaint needs padding on at least one side", field="padding")

    def _form(
        self, request: InpaintRequest | OutpaintRequest, context: JobContext
    ) -> dict[str, str | FilePart]:
        """The multipart form for one edit (CPU work: runs off the event loop)."""
        config = self._settings
        if isinstance(request, InpaintRequest):
            pixels, mask, original = request.image, request.mask, context.image
            prompt = request.params.prompt.strip() or config.inpaint_prompt
        else:
            (pixels, mask), original = outpaint_canvas(request), None
            prompt = request.params.prompt.strip() or config.outpaint_prompt
        height, width = pixels.shape[:2]
        shrunk = shrink_for_upload(pixels, mask)
        if shrunk is not None:
            (pixels, mask), original = shrunk, None
        upload = upload_image(pixels, original)
        if len(upload.data) > MAX_IMAGE_BYTES:
            raise ProviderRejected(
                f"the image is {len(upload.data)} bytes encoded; OpenAI takes at most "
                f"{MAX_IMAGE_BYTES}",
                field="image",
            )
        mask_png = alpha_mask_png(mask)
        if len(mask_png) > MAX_MASK_BYTES:
            raise ProviderRejected(
                f"the mask is {len(mask_png)} bytes as PNG; OpenAI takes at most "
                f"{MAX_MASK_BYTES}: use a simpler mask",
                field="mask",
            )
        size = config.size
        if size == "match":
            size = "{}x{}".format(*nearest_size(width, height))
        form: dict[str, str | FilePart] = {
            "model": request.model,
            "prompt": prompt,
            "n": "1",
            "size": size,
            "quality": config.quality,
            "output_format": "png",
            "image": FilePart(upload.data, f"image.{upload.extension}", upload.content_type),
            "mask": FilePart(mask_png, "mask.png", "image/png"),
        }
        if config.input_fidelity is not None:
            form["input_fidelity"] = config.input_fidelity
        return form
