"""The provider's own config keys, read by ``start`` before any job runs.

The HTTP keys (``base_url``, timeouts, retries, body cap) are the SDK's, read by
:class:`~retouch.sdk.http.HttpConfig`; ``api_key`` is the secret the server resolves
from ``api_key_env``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from retouch.sdk import ConfigReader

from ._endpoints import GROW_MASK_MAX, PROMPT_MAX_CHARS, UPSCALERS, Service

DEFAULT_BASE_URL = "https://api.stability.ai"
DEFAULT_UPSCALE_PROMPT = "the same picture, sharp and detailed, at high resolution"
"""Conservative and creative upscales require a prompt; enhance requests carry none."""
POLL_INTERVAL_S = 10.0
"""The results endpoint asks to be polled at most once every 10 seconds."""

UnpromptedInpaint = Literal["erase", "inpaint"]
OutputFormat = Literal["png", "webp", "jpeg"]
Answer = Literal["image", "json"]


@dataclass(frozen=True, slots=True)
class StabilityConfig:
    """Settings of the Stability provider (the plugin's README shows a TOML example).

    - ``unprompted_inpaint``: where an inpaint without a prompt goes: ``erase``
      (remove what is masked) or ``inpaint`` with ``default_prompt``.
    - ``upscale_x2`` / ``upscale_x4``: ``fast`` (always 4x), ``conservative`` or
      ``creative`` (about 4 megapixels; creative is asynchronous and polled every
      ``poll_interval_s``). Results are resized to exactly the requested factor.
    - ``upscale_prompt``: the prompt conservative and creative upscales require.
    - ``grow_mask``: pixels Stability grows (and blurs) the mask by, 0 to 20.
    - ``output_format``: what Stability encodes its answer as.
    - ``answer``: ``image`` (raw bytes, seed and finish reason in headers) or ``json``
      (base64 with ``seed`` and ``finish_reason``).
    - ``client_id``: sent as ``stability-client-id``.
    """

    unprompted_inpaint: UnpromptedInpaint = "erase"
    default_prompt: str = ""
    upscale_x2: str = "conservative"
    upscale_x4: str = "fast"
    upscale_prompt: str = DEFAULT_UPSCALE_PROMPT
    grow_mask: int = 5
    output_format: OutputFormat = "png"
    answer: Answer = "image"
    poll_interval_s: float = POLL_INTERVAL_S
    client_id: str = "retouch"

    def __post_init__(self) -> None:
        if self.unprompted_inpaint == "inpaint" and not self.default_prompt.strip():
            raise ValueError(
                "provider 'stability': unprompted_inpaint = 'inpaint' needs a default_prompt"
            )

    def upscaler(self, scale: int) -> Service | None:
        """The service that upscales by ``scale``, or ``None`` for other factors."""
        name = {2: self.upscale_x2, 4: self.upscale_x4}.get(scale)
        return None if name is None else UPSCALERS[name]

    @classmethod
    def read(cls, read: ConfigReader) -> StabilityConfig:
        """The provider's keys from ``read``; ValueError names the first bad one."""
        default = cls()
        default_prompt = read.optional_string("default_prompt") or ""
        upscale_prompt = read.string("upscale_prompt", default.upscale_prompt)
        for key, text in (("default_prompt", default_prompt), ("upscale_prompt", upscale_prompt)):
            if len(text) > PROMPT_MAX_CHARS:
                raise ValueError(
                    f"provider 'stability': config key {key!r} must be at most "
                    f"{PROMPT_MAX_CHARS} characters"
                )
        upscalers = tuple(UPSCALERS)
        return cls(
            unprompted_inpaint=cast(
                UnpromptedInpaint,
                read.string("unprompted_inpaint", "erase", choices=("erase", "inpaint")),
            ),
            default_prompt=default_prompt,
            upscale_x2=read.string("upscale_x2", default.upscale_x2, choices=upscalers),
            upscale_x4=read.string("upscale_x4", default.upscale_x4, choices=upscalers),
            upscale_prompt=upscale_prompt,
            grow_mask=read.integer(
                "grow_mask", default.grow_mask, minimum=0, maximum=GROW_MASK_MAX
            ),
            output_format=cast(
                OutputFormat,
                read.string("output_format", "png", choices=("png", "webp", "jpeg")),
            ),
            answer=cast(Answer, read.string("answer", "image", choices=("image", "json"))),
            poll_interval_s=read.number(
                "poll_interval_s", POLL_INTERVAL_S, minimum=0.001, maximum=600.0
            ),
            client_id=read.string("client_id", default.client_id),
        )
