"""A fake of OpenAI's image edits endpoint on the SDK's FakeHttpServer.

It answers as the API reference describes
(https://platform.openai.com/docs/api-reference/images/createEdit): a multipart
``POST /v1/images/edits`` with ``image``, ``mask`` (same size, RGBA, transparent where
to edit), a required ``prompt``, ``model``, ``n``, ``size`` and ``quality``; JSON back
with ``data[0].b64_json`` and the ``usage`` in tokens; errors as ``{"error": {...}}``.
Like gpt-image-1 it answers at the *size asked for* (1024x1024 and so on), not the
input's, and it treats the mask as guidance: it changes pixels everywhere, most where
the mask is transparent, so only the provider's compositing keeps the rest exact.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from retouch.sdk.testing import FakeHttpServer, RecordedRequest, Reply

from .hosted import API_KEY

EDITS = "/v1/images/edits"
SIZES = {"1024x1024": (1024, 1024), "1536x1024": (1536, 1024), "1024x1536": (1024, 1536)}
USAGE = {
    "total_tokens": 1_388,
    "input_tokens": 332,
    "output_tokens": 1_056,
    "input_tokens_details": {"text_tokens": 38, "image_tokens": 294},
}
"""A medium-quality 1024x1024 edit's tokens: 38 * $5 + 294 * $10 + 1056 * $40 per
million = $0.045370, so 5 credits at one credit per cent, rounded up."""
EDIT_COLOUR = (250, 20, 200)


def error(status: int, message: str, *, code: str | None = None, param: str | None = None) -> Reply:
    """An error answer in OpenAI's shape."""
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
    return Reply.json(body, status=status)


def rgba_of(data: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGBA", f"the mask is {image.mode}, not RGBA"
        return np.asarray(image, dtype=np.uint8)


def rgb_of(data: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


class FakeOpenAI:
    """The edits endpoint, routed on ``server``. ``usage`` is what answers report
    (``None`` leaves it out)."""

    def __init__(self, server: FakeHttpServer) -> None:
        self.server = server
        self.usage: dict[str, object] | None = dict(USAGE)
        server.route("POST", EDITS, self._edit)

    def requests(self) -> list[RecordedRequest]:
        return self.server.requests_to("POST", EDITS)

    def _edit(self, request: RecordedRequest) -> Reply:
        if request.bearer != API_KEY:
            return error(401, "Incorrect API key provided: sk-****.", code="invalid_api_key")
        if request.content_type != "multipart/form-data":
            return error(400, "Invalid content type: use multipart/form-data")
        form = request.form()
        for name in ("image", "mask"):
            if name not in form or form[name].filename is None:
                return error(400, f"Missing required parameter: '{name}'.", param=name)
        if not form.get("prompt") or not form["prompt"].text:
            return error(400, "Missing required parameter: 'prompt'.", param="prompt")
        image, mask = rgb_of(form["image"].data), rgba_of(form["mask"].data)
        if mask.shape[:2] != image.shape[:2]:
            return error(400, "Invalid mask image: it must match the image's size.", param="mask")
        size = form["size"].text if "size" in form else "auto"
        width, height = SIZES.get(size, (1024, 1024))
        edited = _guided_edit(image, mask[..., 3] == 0, (width, height))
        buffer = io.BytesIO()
        Image.fromarray(edited).save(buffer, format="PNG", compress_level=1)
        document: dict[str, object] = {
            "created": 1_800_000_000,
            "data": [{"b64_json": base64.b64encode(buffer.getvalue()).decode()}],
        }
        if self.usage is not None:
            document["usage"] = self.usage
        return Reply.json(document, headers={"x-request-id": "req_fake_0123"})


def _guided_edit(
    image: NDArray[np.uint8], edit: NDArray[np.bool_], size: tuple[int, int]
) -> NDArray[np.uint8]:
    """Paint the transparent area, and nudge every other pixel too (the mask is only
    guidance to the model), at the answer's size."""
    out = (image.astype(np.int16) + 3).clip(0, 255).astype(np.uint8)
    out[edit] = EDIT_COLOUR
    return np.asarray(Image.fromarray(out).resize(size, Image.Resampling.NEAREST), dtype=np.uint8)
