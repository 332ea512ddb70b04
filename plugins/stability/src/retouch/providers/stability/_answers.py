"""Reading what the v2beta API answers: generated images, job ids and errors.

A successful call answers 200 with either the image bytes (``accept: image/*``; the
``finish-reason`` and ``seed`` ride in headers) or JSON ``{"image": base64, "seed",
"finish_reason"}`` (``accept: application/json``). ``finish_reason`` is ``SUCCESS`` or
``CONTENT_FILTERED``: Stability's moderation blurred the result, so it is refused here
rather than handed on as a picture. Errors answer JSON ``{"id", "name", "errors": [...]}``;
a request moderation refused outright is 403 with ``name = "content_moderation"``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from retouch.sdk import ProviderError, ProviderRejected, ProviderUnavailable
from retouch.sdk.http import Response

CONTENT_FILTERED = "CONTENT_FILTERED"
SUCCESS = "SUCCESS"

_BLAMED_FIELDS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "image": "image",
    "mask": "mask",
    "left": "padding",
    "right": "padding",
    "up": "padding",
    "down": "padding",
    "seed": "seed",
}
"""Stability's form fields, by the retouch request field an error about them blames."""


@dataclass(frozen=True, slots=True)
class Generation:
    """A finished generation: the encoded image and the seed Stability used."""

    image: bytes
    seed: str


def content_filtered(detail: str) -> ProviderRejected:
    """The error for a result or request Stability's moderation refused."""
    return ProviderRejected(
        f"Stability's content moderation refused this edit ({detail}); nothing was "
        f"charged: change the prompt or the image and try again"
    )


def generation(response: Response) -> Generation:
    """The generation in a 200 answer, whichever ``accept`` asked for it."""
    if response.content_type.startswith("image/"):
        reason = response.headers.get("finish-reason")
        if reason is None:
            raise response.malformed("an image but no finish-reason header")
        _check_finish(response, reason)
        return Generation(response.body, response.headers.get("seed", ""))
    reason = response.pick("finish_reason", str)
    _check_finish(response, reason)
    encoded = response.pick("image", str)
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise response.malformed("an 'image' field that is not base64") from None
    seed = response.pick("seed", int, -1)
    return Generation(image, "" if seed < 0 else str(seed))


def job_id(response: Response) -> str:
    """The generation id an asynchronous service (creative upscale) answers."""
    generation_id = response.pick("id", str)
    if not generation_id or not generation_id.isalnum():
        raise response.malformed(f"a generation id {generation_id[:80]!r} that is not usable")
    return generation_id


def classify(response: Response) -> ProviderError | None:
    """The error a non-2xx answer means, where Stability's body says more than the
    status: moderation refusals, and which field a 400 blames."""
    name, messages = _error_parts(response)
    detail = "; ".join(messages)[:300] or f"HTTP {response.status}"
    if response.status == 403 and name == "content_moderation":
        return content_filtered(detail)
    if response.status in (400, 413, 422):
        return ProviderRejected(f"Stability refused the request: {detail}", field=_blamed(messages))
    if response.status == 402:
        return ProviderUnavailable(
            "the Stability account has run out of credits (HTTP 402); the operator should top it up"
        )
    return None


def _check_finish(response: Response, reason: str) -> None:
    if reason == CONTENT_FILTERED:
        raise content_filtered("finish reason CONTENT_FILTERED")
    if reason != SUCCESS:
        raise response.malformed(f"finish reason {reason[:40]!r}, neither SUCCESS nor filtered")


def _error_parts(response: Response) -> tuple[str, list[str]]:
    if not response.content_type.endswith("json"):
        return "", []
    try:
        document = response.json_object()
    except ProviderError:
        return "", []
    name, errors = document.get("name"), document.get("errors")
    messages = [str(e) for e in errors] if isinstance(errors, list) else []
    return (name if isinstance(name, str) else ""), messages


def _blamed(messages: list[str]) -> str:
    for message in messages:
        name = message.split(":", 1)[0].strip()
        if name in _BLAMED_FIELDS:
            return _BLAMED_FIELDS[name]
    return ""
