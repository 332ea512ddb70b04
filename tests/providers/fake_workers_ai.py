"""A fake of Cloudflare Workers AI's REST run endpoint for the SD 1.5 inpainting model.

It validates each request against the model's documented input schema (bearer token,
JSON body, ``prompt`` required, ``image`` and ``mask`` as arrays of byte values that
decode to images, ``num_steps`` at most 20, ``width``/``height`` within 256..2048),
records it, and answers PNG bytes of the requested size with *every* pixel changed,
or a v4 error envelope the way the API does.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from retouch.sdk.testing import FakeHttpServer, RecordedRequest, Reply

TOKEN = "cf-fake-workers-ai-token-0123456789"
ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
MODEL_ID = "@cf/runwayml/stable-diffusion-v1-5-inpainting"
RUN_PATH = f"/client/v4/accounts/{ACCOUNT_ID}/ai/run/{MODEL_ID}"

Json = dict[str, Any]


def decode(data: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


@dataclass(frozen=True)
class Job:
    """One valid request the fake ran, with its image and mask decoded."""

    body: Json
    image: NDArray[np.uint8]
    mask: NDArray[np.uint8]


@dataclass
class FakeWorkersAI:
    """Workers AI's run endpoint on a :class:`FakeHttpServer`; ``jobs`` holds every
    valid request, in order. Queue faults on :data:`RUN_PATH` ahead of it."""

    api: FakeHttpServer
    token: str = TOKEN
    jobs: list[Job] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.api.route("POST", RUN_PATH, self.run)

    @property
    def base_url(self) -> str:
        """What the provider's ``base_url`` should be."""
        return self.api.url_for("/client/v4")

    def run(self, request: RecordedRequest) -> Reply:
        if request.bearer != self.token:
            return envelope(401, 10000, "Authentication error")
        model = request.path.partition("/ai/run/")[2]
        if model != MODEL_ID:
            return envelope(400, 5007, f"No such model {model} or task")
        if request.content_type != "application/json":
            return envelope(400, 3003, "Request is missing headers or body: content-type")
        try:
            body = request.json()
        except ValueError:
            return envelope(400, 3003, "Request is missing headers or body: body")
        problem = _schema_problem(body)
        if problem:
            return envelope(400, 5006, f"Error: {problem}")
        image = _decode_array(body["image"])
        mask = _decode_array(body["mask"])
        if image is None or mask is None:
            return envelope(400, 5004, "Invalid data type for image input")
        self.jobs.append(Job(body, image, mask))
        width, height = body.get("width", 512), body.get("height", 512)
        resized = Image.fromarray(image[..., :3]).resize((width, height))
        buffer = io.BytesIO()
        Image.fromarray(255 - np.asarray(resized)).save(buffer, format="PNG")
        return Reply.raw(buffer.getvalue(), "image/png")


def envelope(status: int, code: int, message: str) -> Reply:
    """The v4 error envelope Cloudflare's API answers failures with."""
    return Reply.json(
        {
            "result": None,
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
        },
        status=status,
    )


def _schema_problem(body: object) -> str:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    allowed = {
        "prompt",
        "negative_prompt",
        "height",
        "width",
        "image",
        "image_b64",
        "mask",
        "num_steps",
        "strength",
        "guidance",
        "seed",
    }
    unknown = set(body) - allowed
    if unknown:
        return f"unknown properties {sorted(unknown)}"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return "prompt is required and must be a non-empty string"
    for side in ("width", "height"):
        value = body.get(side)
        if value is not None and not (isinstance(value, int) and 256 <= value <= 2048):
            return f"{side} must be an integer from 256 to 2048"
    steps = body.get("num_steps")
    if steps is not None and not (isinstance(steps, int) and steps <= 20):
        return "num_steps must be an integer of at most 20"
    for name in ("image", "mask"):
        value = body.get(name)
        if not isinstance(value, list) or not all(
            isinstance(v, int) and 0 <= v <= 255 for v in value
        ):
            return f"{name} must be an array of integers from 0 to 255"
    return ""


def _decode_array(values: list[int]) -> NDArray[np.uint8] | None:
    try:
        return decode(bytes(values))
    except (OSError, ValueError):
        return None
