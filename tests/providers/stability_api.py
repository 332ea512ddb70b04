"""A fake of Stability AI's v2beta stable-image API on the SDK's FakeHttpServer.

It answers as the API reference describes (https://platform.stability.ai/docs/api-reference):
multipart requests to each service, ``accept: image/*`` (bytes with ``finish-reason``
and ``seed`` headers) or ``application/json`` (base64), creative upscale started with
``{"id"}`` and polled at ``/v2beta/results/{id}`` (202 while it runs), and errors as
``{"id", "name", "errors"}``. It refuses what the real API refuses (no bearer key, a
missing prompt, no outpaint direction) so a wrong request fails loudly, and it edits
*every* pixel, masked or not, so only the provider's compositing keeps the rest exact.
"""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from retouch.sdk.testing import FakeHttpServer, RecordedRequest, Reply

from .hosted import API_KEY

EDIT = "/v2beta/stable-image/edit/"
UPSCALE = "/v2beta/stable-image/upscale/"
INPAINT, ERASE, OUTPAINT = EDIT + "inpaint", EDIT + "erase", EDIT + "outpaint"
FAST, CONSERVATIVE, CREATIVE = UPSCALE + "fast", UPSCALE + "conservative", UPSCALE + "creative"
RESULTS = "/v2beta/results/"
SEED_USED = "1234567"
"""The seed the fake says it used when asked for a random one (seed 0)."""
WHOLE_IMAGE_UPSCALE = 3
"""Conservative and creative upscales answer a fixed size (about 4 megapixels), not the
factor asked for; the fake answers 3x so the provider's resize is exercised cheaply."""


def error(status: int, name: str, *messages: str) -> Reply:
    """An error answer in Stability's shape."""
    return Reply.json(
        {"id": "e1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4", "name": name, "errors": list(messages)},
        status=status,
    )


def png(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def pixels_of(data: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


@dataclass
class CreativeJob:
    """An asynchronous generation: in progress for ``busy_polls`` polls (for ever when
    ``None``, until ``finish`` is set), then done."""

    id: str
    result: Reply
    busy_polls: int | None
    finish: asyncio.Event = field(default_factory=asyncio.Event)
    polls: int = 0


class FakeStability:
    """Stability's services, routed on ``server``; ``jobs`` holds creative upscales.

    ``finish_reason`` is what the next generations report (``CONTENT_FILTERED`` plays
    moderation); ``creative_busy_polls`` is how many polls new creative jobs answer
    202 to (``None``: until the test sets their ``finish``). ``polled`` is set on every
    poll: a test clears it and waits for the next one.
    """

    def __init__(self, server: FakeHttpServer) -> None:
        self.server = server
        self.finish_reason = "SUCCESS"
        self.creative_busy_polls: int | None = 0
        self.polled = asyncio.Event()
        self.jobs: dict[str, CreativeJob] = {}
        for path in (INPAINT, ERASE, OUTPAINT, FAST, CONSERVATIVE):
            server.route("POST", path, self._generate)
        server.route("POST", CREATIVE, self._start_creative)

    @property
    def next_job_id(self) -> str:
        """The id the next creative upscale will get (64 hex digits, as the API's)."""
        return f"{0xC0FFEE + len(self.jobs):064x}"

    def requests(self, path: str) -> list[RecordedRequest]:
        """What was POSTed to ``path``."""
        return self.server.requests_to("POST", path)

    def polls(self, job_id: str) -> list[RecordedRequest]:
        return self.server.requests_to("GET", RESULTS + job_id)

    def _generate(self, request: RecordedRequest) -> Reply:
        refusal = _refusal(request)
        if refusal is not None:
            return refusal
        return self._answer(request, _edited(request))

    def _start_creative(self, request: RecordedRequest) -> Reply:
        refusal = _refusal(request)
        if refusal is not None:
            return refusal
        answer = self._answer(request, _edited(request))
        job = CreativeJob(self.next_job_id, answer, self.creative_busy_polls)
        self.jobs[job.id] = job
        self.server.route("GET", RESULTS + job.id, lambda polled: self._poll(job, polled))
        return Reply.json({"id": job.id})

    def _poll(self, job: CreativeJob, request: RecordedRequest) -> Reply:
        job.polls += 1
        self.polled.set()
        if request.bearer != API_KEY:
            return error(401, "unauthorized", "authorization: invalid")
        if job.busy_polls is not None and job.polls > job.busy_polls:
            job.finish.set()
        if not job.finish.is_set():
            return Reply.json({"id": job.id, "status": "in-progress"}, status=202)
        return job.result

    def _answer(self, request: RecordedRequest, pixels: NDArray[np.uint8]) -> Reply:
        form = request.form()
        seed = form["seed"].text if "seed" in form and form["seed"].text != "0" else SEED_USED
        data = png(pixels)
        if request.headers.get("accept", "image/*") == "application/json":
            document = {
                "image": base64.b64encode(data).decode(),
                "seed": int(seed),
                "finish_reason": self.finish_reason,
            }
            return Reply.json(document)
        headers = {"finish-reason": self.finish_reason, "seed": seed}
        return Reply.raw(data, "image/png", headers=headers)


def _refusal(request: RecordedRequest) -> Reply | None:
    """The error the real API gives a request it cannot take, or ``None``."""
    if request.bearer != API_KEY:
        return error(401, "unauthorized", "authorization: invalid or missing API key")
    if request.content_type != "multipart/form-data":
        return error(400, "bad_request", "content-type: must be multipart/form-data")
    form = request.form()
    if "image" not in form or form["image"].filename is None:
        return error(400, "bad_request", "image: required")
    needs_prompt = request.path in (INPAINT, CONSERVATIVE, CREATIVE)
    if needs_prompt and ("prompt" not in form or not form["prompt"].text):
        return error(400, "bad_request", "prompt: cannot be empty")
    if request.path == OUTPAINT and not any(
        int(form[side].text) for side in ("left", "right", "up", "down") if side in form
    ):
        return error(400, "bad_request", "left: at least one direction must be non-zero")
    return None


def _edited(request: RecordedRequest) -> NDArray[np.uint8]:
    """The fake's 'generation': every pixel changed, at the size the service answers."""
    form = request.form()
    image = pixels_of(form["image"].data)
    changed = (255 - image).astype(np.uint8)
    height, width = image.shape[:2]
    if request.path == OUTPAINT:
        sides = {s: int(form[s].text) if s in form else 0 for s in ("left", "right", "up", "down")}
        canvas = np.full(
            (height + sides["up"] + sides["down"], width + sides["left"] + sides["right"], 3),
            (0, 200, 0),
            dtype=np.uint8,
        )
        canvas[sides["up"] : sides["up"] + height, sides["left"] : sides["left"] + width] = changed
        return canvas
    factor = {FAST: 4, CONSERVATIVE: WHOLE_IMAGE_UPSCALE, CREATIVE: WHOLE_IMAGE_UPSCALE}.get(
        request.path, 1
    )
    return np.repeat(np.repeat(changed, factor, axis=0), factor, axis=1)
