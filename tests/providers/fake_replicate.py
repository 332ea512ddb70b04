"""A fake of Replicate's predictions API, speaking its documented wire format.

It checks every request it receives the way Replicate would (bearer token, JSON body
with ``version`` and ``input``, image and mask as data or HTTP URLs), records them for
the tests' assertions, and runs predictions through starting → processing (logs with
tqdm bars) → succeeded at the pace the test sets: each poll moves a prediction one
step, so no test waits on time. The output image has been resized to the model's own
512 x 512 and *every* pixel changed, masked or not, so tests can show the provider
puts the unmasked pixels back exactly.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from numpy.typing import NDArray
from PIL import Image

TOKEN = "r8_fake-replicate-token-0123456789"
MODEL_SIDE = 512

Json = dict[str, Any]


def png_bytes(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def repaint(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """What the fake model answers: the input at 512 x 512, every pixel inverted."""
    resized = Image.fromarray(image[..., :3]).resize((MODEL_SIDE, MODEL_SIDE))
    return 255 - np.asarray(resized)


@dataclass
class Received:
    """One request the fake answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Json | None


@dataclass
class FakePrediction:
    id: str
    version: str | None
    model: str | None
    input: Json
    steps_to_finish: int
    status: str = "starting"
    logs: str = ""
    output: object = None
    error: str | None = None
    polls: int = 0


@dataclass
class FakeReplicate:
    """The fake's state and behaviour; tests change the knobs between calls.

    - ``sync``: answer the create call with a finished prediction (``Prefer: wait``).
    - ``steps``: polls a prediction needs before it succeeds (one step per poll).
    - ``hang``: predictions never finish (their progress creeps towards 90 %); only
      cancelling ends them.
    - ``fail_with``: finish as failed with this error (e.g. the NSFW checker's words).
    - ``output_url``: a function of the fake's own base URL and prediction id giving
      the URL put in ``output`` (tests point it at forbidden addresses).
    - ``data_url_output``: put the image in ``output`` as a data URL.
    """

    sync: bool = True
    steps: int = 3
    hang: bool = False
    fail_with: str | None = None
    output_url: Callable[[str, str], str] | None = None
    data_url_output: bool = False
    received: list[Received] = field(default_factory=list)
    predictions: dict[str, FakePrediction] = field(default_factory=dict)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    downloads: int = 0
    base_url: str = ""
    _counter: int = 0

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/predictions", self.create),
            web.post("/v1/models/{owner}/{name}/predictions", self.create),
            web.get("/v1/predictions/{id}", self.get),
            web.post("/v1/predictions/{id}/cancel", self.cancel),
            web.get("/delivery/{id}/out-0.png", self.deliver),
        ]

    def calls(self, method: str, pattern: str) -> list[Received]:
        """The requests received whose path matches ``pattern`` (a regex)."""
        return [r for r in self.received if r.method == method and re.fullmatch(pattern, r.path)]

    # --- handlers -------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        problem = self._authorised(request)
        if problem is not None:
            return problem
        if request.content_type != "application/json" or not isinstance(body, dict):
            return _problem(400, "Bad request", "the body must be a JSON object")
        unknown = set(body) - {"version", "input", "webhook", "webhook_events_filter", "stream"}
        if unknown:
            return _problem(422, "Input validation failed", f"Additional property {unknown}")
        model = None
        if "owner" in request.match_info:
            model = f"{request.match_info['owner']}/{request.match_info['name']}"
        elif not re.fullmatch(r"[0-9a-f]{64}", str(body.get("version", ""))):
            return _problem(422, "Input validation failed", "version is required")
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            return _problem(422, "Input validation failed", "input is required")
        self._counter += 1
        prediction = FakePrediction(
            id=f"p{self._counter:04d}fake",
            version=body.get("version"),
            model=model,
            input=inputs,
            steps_to_finish=0 if self.sync else self.steps,
        )
        self.predictions[prediction.id] = prediction
        if self.sync and not self.hang:
            self._finish(prediction)
        return web.json_response(self._render(prediction), status=201)

    async def get(self, request: web.Request) -> web.Response:
        await self._record(request)
        problem = self._authorised(request)
        if problem is not None:
            return problem
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return _problem(404, "Not found", "no such prediction")
        if prediction.status in ("starting", "processing"):
            prediction.polls += 1
            self._advance(prediction)
        return web.json_response(self._render(prediction))

    async def cancel(self, request: web.Request) -> web.Response:
        await self._record(request)
        problem = self._authorised(request)
        if problem is not None:
            return problem
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return _problem(404, "Not found", "no such prediction")
        if prediction.status in ("starting", "processing"):
            prediction.status = "canceled"
        self.cancelled.set()
        return web.json_response(self._render(prediction))

    async def deliver(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.downloads += 1
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None or prediction.status != "succeeded":
            return web.Response(status=404)
        return web.Response(body=self._output_png(prediction), content_type="image/png")

    # --- the model ------------------------------------------------------------------

    def _advance(self, prediction: FakePrediction) -> None:
        if self.hang:
            percent = min(90, 10 * prediction.polls)
        elif prediction.polls >= prediction.steps_to_finish:
            self._finish(prediction)
            return
        else:
            percent = 100 * prediction.polls // max(prediction.steps_to_finish, 1)
        prediction.status = "processing"
        bar = "█" * (percent // 10)
        prediction.logs += f"{percent:3d}%|{bar:<10}| {prediction.polls}/50 [00:01<00:02]\n"

    def _finish(self, prediction: FakePrediction) -> None:
        if self.fail_with is not None:
            prediction.status = "failed"
            prediction.error = self.fail_with
            return
        prediction.status = "succeeded"
        prediction.logs += "100%|██████████| 50/50 [00:03<00:00]\n"
        if self.data_url_output:
            encoded = base64.b64encode(self._output_png(prediction)).decode()
            prediction.output = [f"data:image/png;base64,{encoded}"]
        elif self.output_url is not None:
            prediction.output = [self.output_url(self.base_url, prediction.id)]
        else:
            prediction.output = [f"{self.base_url}/delivery/{prediction.id}/out-0.png"]

    def _output_png(self, prediction: FakePrediction) -> bytes:
        return png_bytes(repaint(self.input_image(prediction, "image")))

    def input_image(self, prediction: FakePrediction, name: str) -> NDArray[np.uint8]:
        """The decoded image the provider sent as input ``name`` (a data URL)."""
        value = str(prediction.input[name])
        header, _, payload = value.partition(",")
        assert header.startswith("data:image/"), header[:40]
        assert header.endswith(";base64"), header[:40]
        return decode(base64.b64decode(payload))

    def _render(self, prediction: FakePrediction) -> Json:
        terminal = prediction.status in ("succeeded", "failed", "canceled")
        base = f"{self.base_url}/v1/predictions/{prediction.id}"
        return {
            "id": prediction.id,
            "model": prediction.model or "stability-ai/stable-diffusion-inpainting",
            "version": prediction.version,
            "input": dict.fromkeys(prediction.input, "…"),
            "logs": prediction.logs,
            "output": prediction.output,
            "error": prediction.error,
            "status": prediction.status,
            "created_at": "2026-12-02T04:00:00.000000Z",
            "metrics": {"predict_time": 2.5} if terminal else {},
            "urls": {"get": base, "cancel": f"{base}/cancel"},
        }

    # --- plumbing -------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Json | None:
        raw = await request.read()
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        self.received.append(Received(request.method, request.path, dict(request.headers), body))
        return body

    def _authorised(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return None


def _problem(status: int, title: str, detail: str) -> web.Response:
    return web.json_response(
        {"title": title, "detail": detail, "status": status},
        status=status,
        content_type="application/problem+json",
    )
