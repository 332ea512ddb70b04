"""The rest provider: one JSON POST per inpaint, one per outpainted side."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator, Mapping
from importlib import metadata
from typing import Any

from retouch.sdk import (
    ConfigReader,
    CostModel,
    EditRequest,
    EncodedImage,
    Event,
    InpaintRequest,
    JobContext,
    Manifest,
    Operation,
    OutpaintRequest,
    Progress,
    ProviderRejected,
    Result,
    RGBImage,
    Secret,
    Usage,
    decode_image,
    encode_png,
)
from retouch.sdk.http import RemoteProvider, Response, bearer, pick

from ._settings import RestSettings

MAX_PIXELS = 4_194_304
"""Largest input and output: 2048 x 2048, what APIs of this shape commonly take."""

SIDES = ("left", "right", "top", "bottom")


def _version() -> str:
    try:
        return metadata.version("retouch-rest")
    except metadata.PackageNotFoundError:
        return "0+unknown"


MANIFEST = Manifest(
    name="rest",
    version=_version(),
    description=(
        "Any hosted image API of the common JSON shape: POST {base_url}/images/inpaint "
        "and /images/outpaint with a bearer token, base64 images in and out. The "
        "vendor's model is set in the config; callers use the model 'default'."
    ),
    operations=frozenset({Operation.INPAINT, Operation.OUTPAINT}),
    models=("default",),
    max_pixels=MAX_PIXELS,
    supports_mask=True,
    supports_outpaint=True,
    cost=CostModel(
        credits_per_job=1,
        credits_per_megapixel=1,
        credits_per_provider_credit=1.0,
        metered_reserve=8,
    ),
    remote=True,
    quality_rank=5,
)


class RestProvider(RemoteProvider):
    """A generic JSON REST image provider; see the package docstring for its config."""

    MANIFEST = MANIFEST
    HTTP_DEFAULTS = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = RestSettings(api_key=None)

    @property
    def settings(self) -> RestSettings:
        """The API settings in force."""
        return self._settings

    def configure(self, read: ConfigReader) -> None:
        self._settings = RestSettings.read(read)

    def auth_headers(self) -> Mapping[str, str | Secret]:
        key = self._settings.api_key
        return {} if key is None else {"Authorization": bearer(key)}

    async def execute(
        self, request: EditRequest, context: JobContext
    ) -> AsyncGenerator[Event, None]:
        yield Progress(0.0, "sending to the rest API")
        if isinstance(request, InpaintRequest):
            image, usage = await self._inpaint(request, context)
            yield Result(image, {"provider": "rest", "seed": str(request.seed)}, usage)
            return
        assert isinstance(request, OutpaintRequest)
        sides = [(side, getattr(request.padding, side)) for side in SIDES]
        sides = [(side, pixels) for side, pixels in sides if pixels]
        limit = self._settings.max_outpaint_px
        for side, pixels in sides:
            if pixels > limit:
                raise ProviderRejected(
                    f"the rest provider adds at most {limit} pixels per side; {side} asks "
                    f"for {pixels}",
                    field=side,
                )
        canvas = request.image
        encoded = _original(context.image)
        total = Usage(images=0)
        for done, (side, pixels) in enumerate(sides):
            canvas, usage = await self._outpaint_side(
                request, context, canvas, encoded, side, pixels
            )
            encoded = None
            total = total + usage
            yield Progress((done + 1) / (len(sides) + 1), f"outpainted {side}")
        yield Result(canvas, {"provider": "rest", "seed": str(request.seed)}, total)

    async def _inpaint(
        self, request: InpaintRequest, context: JobContext
    ) -> tuple[RGBImage, Usage]:
        fields = self._settings.fields
        original = _original(context.image)
        mask = _original(context.mask)
        body = self._common(request, context)
        body[fields["image"]] = _b64(
            original if original is not None else encode_png(request.image)
        )
        body[fields["mask"]] = _b64(mask if mask is not None else encode_png(request.mask))
        response = await self.http.post_json(
            self._settings.inpaint_path,
            body,
            context=context,
            headers=self._idempotency(context.job_id),
        )
        return await self._image(response, context)

    async def _outpaint_side(
        self,
        request: OutpaintRequest,
        context: JobContext,
        canvas: RGBImage,
        encoded: bytes | None,
        side: str,
        pixels: int,
    ) -> tuple[RGBImage, Usage]:
        fields = self._settings.fields
        body = self._common(request, context)
        body[fields["image"]] = _b64(encoded if encoded is not None else encode_png(canvas))
        body[fields["direction"]] = side
        body[fields["pixels"]] = pixels
        response = await self.http.post_json(
            self._settings.outpaint_path,
            body,
            context=context,
            headers=self._idempotency(f"{context.job_id}-{side}"),
        )
        image, usage = await self._image(response, context)
        height, width = canvas.shape[:2]
        grows_width = side in ("left", "right")
        expected = (height, width + pixels) if grows_width else (height + pixels, width)
        if image.shape[:2] != expected:
            raise response.malformed(
                f"a {image.shape[1]} x {image.shape[0]} image after outpainting {side} by "
                f"{pixels} px; {expected[1]} x {expected[0]} was expected"
            )
        # Keep what we already have exactly; the API only adds the new strip.
        top = pixels if side == "top" else 0
        left = pixels if side == "left" else 0
        out = image.copy()
        out[top : top + height, left : left + width] = canvas
        return out, usage

    def _common(
        self, request: InpaintRequest | OutpaintRequest, context: JobContext
    ) -> dict[str, object]:
        fields, params = self._settings.fields, request.params
        body: dict[str, object] = {
            fields["model"]: self._settings.model,
            fields["prompt"]: params.prompt,
            fields["seed"]: request.seed if self._settings.send_seed else -1,
        }
        if params.negative_prompt:
            body[fields["negative_prompt"]] = params.negative_prompt
        if params.strength is not None:
            body[fields["strength"]] = params.strength
        if params.guidance_scale is not None:
            body[fields["guidance_scale"]] = params.guidance_scale
        if params.steps is not None:
            body[fields["steps"]] = params.steps
        return body

    def _idempotency(self, key: str) -> dict[str, str | Secret]:
        header = self._settings.idempotency_header
        return {header: key} if header else {}

    async def _image(self, response: Response, context: JobContext) -> tuple[RGBImage, Usage]:
        """The answer's image (inline base64, or downloaded from its URL) and usage."""
        answer = self._settings.answer_fields
        document = response.json_object()
        credits = pick(document, answer["credits"], float, -1.0, where=response)
        usage = Usage(images=1) if credits < 0 else Usage(images=1, provider_credits=credits)
        encoded = pick(document, answer["result"], str, "", where=response)
        if encoded:
            data = _unb64(response, encoded, answer["result"])
            return decode_image(data, provider="rest"), usage
        url = pick(document, answer["result_url"], str, "", where=response)
        if not url:
            raise response.malformed(
                f"neither a {answer['result']!r} nor a {answer['result_url']!r} field "
                f"(fields: {', '.join(sorted(document)) or 'none'})"
            )
        downloaded = await self.http.download(url, context=context)
        return decode_image(downloaded.body, provider="rest"), usage


def _original(image: EncodedImage | None) -> bytes | None:
    return None if image is None else image.data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(response: Response, value: str, name: str) -> bytes:
    if value.startswith("data:"):
        _, _, value = value.partition(",")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise response.malformed(f"field {name!r} that is not valid base64") from None
