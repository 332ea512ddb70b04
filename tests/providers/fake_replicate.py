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
from numpy.typing import NDArray
from PIL import Image

from retouch.sdk.testing import FakeHttpServer, RecordedRequest, Reply

TOKEN = "r8_fake-replicate-token-0123456789"
MODEL_SIDE = 512
CREATE = "/v1/predictions"
DELIVERY_HOST = "localhost"
"""The host the fake serves its outputs from (the API is at 127.0.0.1)."""

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
    """Replicate's API on a :class:`FakeHttpServer`; tests change the knobs between
    calls, and queue faults on the server's routes ahead of these answers.

    - ``sync``: answer the create call with a finished prediction (``Prefer: wait``).
    - ``steps``: polls a prediction needs before it succeeds (one step per poll).
    - ``hang``: predictions never finish (their progress creeps towards 90 %); only
      cancelling ends them.
    - ``fail_with``: finish as failed with this error (e.g. the NSFW checker's words).
    - ``output_url``: a function of the fake's own base URL and prediction id giving
      the URL put in ``output`` (tests point it at forbidden addresses).
    - ``data_url_output``: put the image in ``output`` as a data URL.

    ``cancelled`` is set when a cancel call arrives.
    """

    api: FakeHttpServer
    token: str = TOKEN
    models: tuple[str, ...] = ("stability-ai/stable-diffusion-inpainting",)
    sync: bool = True
    steps: int = 3
    hang: bool = False
    fail_with: str | None = None
    output_url: Callable[[str, str], str] | None = None
    data_url_output: bool = False
    predictions: dict[str, FakePrediction] = field(default_factory=dict)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    _counter: int = 0

    def __post_init__(self) -> None:
        self.api.route("POST", CREATE, self.create)
        for model in self.models:
            self.api.route("POST", f"/v1/models/{model}/predictions", self.create)

    @property
    def base_url(self) -> str:
        """What the provider's ``base_url`` should be."""
        return self.api.url_for("/v1")

    def creates(self) -> list[RecordedRequest]:
        """Every create call received, either endpoint."""
        return [
            r for r in self.api.requests if r.method == "POST" and r.path.endswith("/predictions")
        ]

    # --- responders -----------------------------------------------------------------

    def create(self, request: RecordedRequest) -> Reply:
        problem = _unauthorised(request, self.token)
        if problem is not None:
            return problem
        if request.content_type != "application/json":
            return _problem(400, "Bad request", "the body must be JSON")
        try:
            body = request.json()
        except ValueError:
            return _problem(400, "Bad request", "the body is not JSON")
        if not isinstance(body, dict):
            return _problem(400, "Bad request", "the body must be a JSON object")
        unknown = set(body) - {"version", "input", "webhook", "webhook_events_filter", "stream"}
        if unknown:
            return _problem(422, "Input validation failed", f"Additional property {unknown}")
        model = None
        if request.path != CREATE:
            model = request.path.removeprefix("/v1/models/").removesuffix("/predictions")
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
        path = f"/v1/predictions/{prediction.id}"
        self.api.route("GET", path, lambda r: self.get(r, prediction))
        self.api.route("POST", f"{path}/cancel", lambda r: self.cancel(r, prediction))
        self.api.route("GET", f"/delivery/{prediction.id}/out-0.png", self.deliver(prediction))
        if self.sync and not self.hang:
            self._finish(prediction)
        return Reply.json(self._render(prediction), status=201)

    def get(self, request: RecordedRequest, prediction: FakePrediction) -> Reply:
        problem = _unauthorised(request, self.token)
        if problem is not None:
            return problem
        if prediction.status in ("starting", "processing"):
            prediction.polls += 1
            self._advance(prediction)
        return Reply.json(self._render(prediction))

    def cancel(self, request: RecordedRequest, prediction: FakePrediction) -> Reply:
        problem = _unauthorised(request, self.token)
        if problem is not None:
            return problem
        if prediction.status in ("starting", "processing"):
            prediction.status = "canceled"
        self.cancelled.set()
        return Reply.json(self._render(prediction))

    def deliver(self, prediction: FakePrediction) -> Callable[[RecordedRequest], Reply]:
        def answer(request: RecordedRequest) -> Reply:
            if prediction.status != "succeeded":
                return Reply.error(404)
            return Reply.raw(self.output_png(prediction), "image/png")

        return answer

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
            encoded = base64.b64encode(self.output_png(prediction)).decode()
            prediction.output = [f"data:image/png;base64,{encoded}"]
        elif self.output_url is not None:
            prediction.output = [self.output_url(self.api.url, prediction.id)]
        else:
            # Outputs live on another host than the API, as replicate.delivery does.
            url = self.api.url_for(f"/delivery/{prediction.id}/out-0.png")
            prediction.output = [url.replace("//127.0.0.1:", f"//{DELIVERY_HOST}:")]

    def output_png(self, prediction: FakePrediction) -> bytes:
        image = prediction.input["image"]
        if isinstance(image, str) and image.startswith("data:"):
            return png_bytes(repaint(self.input_image(prediction, "image")))
        # An HTTP URL (the object store's): the fake does not fetch it, and paints grey.
        return png_bytes(np.full((MODEL_SIDE, MODEL_SIDE, 3), 128, dtype=np.uint8))

    def input_image(self, prediction: FakePrediction, name: str) -> NDArray[np.uint8]:
        """The decoded image the provider sent as input ``name`` (a data URL)."""
        value = str(prediction.input[name])
        header, _, payload = value.partition(",")
        assert header.startswith("data:image/"), header[:40]
        assert header.endswith(";base64"), header[:40]
        return decode(base64.b64decode(payload))

    def _render(self, prediction: FakePrediction) -> Json:
        terminal = prediction.status in ("succeeded", "failed", "canceled")
        base = self.api.url_for(f"/v1/predictions/{prediction.id}")
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


def _unauthorised(request: RecordedRequest, token: str) -> Reply | None:
    if request.bearer != token:
        return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    return None


def _problem(status: int, title: str, detail: str) -> Reply:
    document = {"title": title, "detail": detail, "status": status}
    return Reply.raw(json.dumps(document).encode(), "application/problem+json", status=status)
