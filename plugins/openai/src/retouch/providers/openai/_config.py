"""The provider's own config keys, read by ``start`` before any job runs.

The HTTP keys (``base_url``, timeouts, retries, body cap) are the SDK's, read by
:class:`~retouch.sdk.http.HttpConfig`; ``api_key`` is the secret the server resolves
from ``api_key_env``.
"""

from __future__ import annotations

from dataclasses import dataclass

from retouch.sdk import ConfigReader

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROMPT_MAX_CHARS = 32_000
DEFAULT_INPAINT_PROMPT = (
    "Fill the transparent area so that it blends seamlessly with the rest of the picture; "
    "leave everything else as it is."
)
DEFAULT_OUTPAINT_PROMPT = (
    "Extend the picture into the transparent border, continuing the scene naturally."
)
QUALITIES = ("low", "medium", "high", "auto")
SIZE_CHOICES = ("match", "auto", "1024x1024", "1536x1024", "1024x1536")
FIDELITIES = ("low", "high")


@dataclass(frozen=True, slots=True)
class OpenAIConfig:
    """Settings of the OpenAI provider (the plugin's README shows a TOML example).

    - ``inpaint_prompt`` / ``outpaint_prompt``: the prompt sent when the caller gave
      none (the endpoint requires one).
    - ``quality``: ``low``, ``medium``, ``high`` or ``auto``; it sets the output tokens
      billed.
    - ``size``: ``match`` (the supported size nearest the input's aspect ratio),
      ``auto`` (the model chooses) or a size the model offers; the answer is resized to
      the request's size either way.
    - ``input_fidelity``: ``low`` or ``high`` (how closely the model keeps the input's
      features; high costs more input tokens); unset leaves the model's default.
    - ``organization`` / ``project``: sent as ``OpenAI-Organization`` / ``OpenAI-Project``.
    """

    inpaint_prompt: str = DEFAULT_INPAINT_PROMPT
    outpaint_prompt: str = DEFAULT_OUTPAINT_PROMPT
    quality: str = "medium"
    size: str = "match"
    input_fidelity: str | None = None
    organization: str | None = None
    project: str | None = None

    @classmethod
    def read(cls, read: ConfigReader) -> OpenAIConfig:
        """The provider's keys from ``read``; ValueError names the first bad one."""
        default = cls()
        prompts = {
            key: read.string(key, getattr(default, key))
            for key in ("inpaint_prompt", "outpaint_prompt")
        }
        for key, text in prompts.items():
            if len(text) > PROMPT_MAX_CHARS:
                raise ValueError(
                    f"provider 'openai': config key {key!r} must be at most "
                    f"{PROMPT_MAX_CHARS} characters"
                )
        fidelity = read.optional_string("input_fidelity")
        if fidelity is not None and fidelity not in FIDELITIES:
            raise ValueError(
                f"provider 'openai': config key 'input_fidelity' must be one of "
                f"{', '.join(FIDELITIES)}, got {fidelity!r}"
            )
        return cls(
            inpaint_prompt=prompts["inpaint_prompt"],
            outpaint_prompt=prompts["outpaint_prompt"],
            quality=read.string("quality", default.quality, choices=QUALITIES),
            size=read.string("size", default.size, choices=SIZE_CHOICES),
            input_fidelity=fidelity,
            organization=read.optional_string("organization"),
            project=read.optional_string("project"),
        )
