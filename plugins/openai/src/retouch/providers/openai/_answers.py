"""Reading what the edits endpoint answers: the image, the tokens billed, or an error.

Success is JSON ``{"created", "data": [{"b64_json": ...}], "usage": {"input_tokens",
"output_tokens", "input_tokens_details": {"text_tokens", "image_tokens"}, ...}}``.
Errors are JSON ``{"error": {"message", "type", "param", "code"}}``; a request the
safety system refused is 400 with ``code = "moderation_blocked"`` (older answers say
``content_policy_violation``), and a 429 with ``code = "insufficient_quota"`` is an
exhausted budget, not a rate limit.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from retouch.sdk import ProviderError, ProviderRejected, ProviderUnavailable
from retouch.sdk.http import Response

MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
_BLAMED_FIELDS = {"prompt": "prompt", "image": "image", "mask": "mask", "model": "model"}
"""The endpoint's parameters, by the retouch request field an error about them blames."""


@dataclass(frozen=True, slots=True)
class Prices:
    """US dollars per million tokens of each kind."""

    text_input: float
    image_input: float
    image_output: float


GPT_IMAGE_1_PRICES = Prices(text_input=5.0, image_input=10.0, image_output=40.0)
"""gpt-image-1's list prices (https://platform.openai.com/docs/pricing)."""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """The tokens one edit was billed for."""

    text_input: int
    image_input: int
    output: int

    def usd(self, prices: Prices) -> float:
        """What these tokens cost at ``prices``."""
        return (
            self.text_input * prices.text_input
            + self.image_input * prices.image_input
            + self.output * prices.image_output
        ) / 1_000_000


@dataclass(frozen=True, slots=True)
class Edit:
    """A finished edit: the encoded image and the tokens it used (``None`` if unsaid)."""

    image: bytes
    usage: TokenUsage | None


def edit_answer(response: Response) -> Edit:
    """The edit in a successful answer."""
    encoded = response.pick("data.0.b64_json", str)
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise response.malformed("a data.0.b64_json that is not base64") from None
    if not image:
        raise response.malformed("an empty data.0.b64_json")
    return Edit(image, _usage(response))


def classify(response: Response) -> ProviderError | None:
    """The error a non-2xx answer means, where OpenAI's error object says more than the
    status: safety refusals, exhausted quota, and which parameter a 400 blames."""
    error = _error_object(response)
    message = str(error.get("message") or f"HTTP {response.status}")[:300]
    code, param = error.get("code"), error.get("param")
    if code in MODERATION_CODES:
        return ProviderRejected(
            f"OpenAI's safety system refused this edit ({message}); nothing was charged: "
            f"change the prompt or the image and try again"
        )
    if response.status == 429 and code == "insufficient_quota":
        return ProviderUnavailable(
            "the OpenAI account has run out of quota (HTTP 429 insufficient_quota); the "
            "operator should check its billing"
        )
    if response.status in (400, 413, 422):
        blamed = _BLAMED_FIELDS.get(param, "") if isinstance(param, str) else ""
        return ProviderRejected(f"OpenAI refused the request: {message}", field=blamed)
    return None


def _usage(response: Response) -> TokenUsage | None:
    if not response.pick("usage", dict, {}):
        return None
    total_input = response.pick("usage.input_tokens", int)
    output = response.pick("usage.output_tokens", int)
    text = response.pick("usage.input_tokens_details.text_tokens", int, -1)
    image = response.pick("usage.input_tokens_details.image_tokens", int, -1)
    if min(total_input, output) < 0:
        raise response.malformed("negative token counts in usage")
    if text < 0 or image < 0:
        # Without the split, price every input token as an image token: never undercharge.
        text, image = 0, total_input
    return TokenUsage(text_input=text, image_input=image, output=output)


def _error_object(response: Response) -> dict[str, Any]:
    if not response.content_type.endswith("json"):
        return {}
    try:
        error = response.json_object().get("error")
    except ProviderError:
        return {}
    return error if isinstance(error, dict) else {}
