"""The provider's own config keys (beside the standard HTTP keys of
:class:`~retouch.sdk.http.HttpConfig`), validated by ``start`` before any job runs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from retouch.sdk import ConfigReader, Secret
from retouch.sdk.http import HttpConfig

MODEL_ID = "@cf/runwayml/stable-diffusion-v1-5-inpainting"
DEFAULT_PROMPT = "a seamless continuation of the surrounding image"
"""Sent when the caller gives no prompt: the model requires one, and this asks it to
fill the hole rather than paint something new."""

HTTP_DEFAULTS = HttpConfig(
    base_url="https://api.cloudflare.com/client/v4",
    # The model runs while the call is open: 20 steps at 2048 x 2048 take a while.
    read_timeout=120.0,
)

_ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")
_MODEL_ID = re.compile(r"@[a-z0-9-]+/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class WorkersAIConfig:
    """Settings of the Workers AI provider (see the README for each key)."""

    account_id: str
    api_key: Secret
    model_id: str = MODEL_ID
    default_prompt: str = DEFAULT_PROMPT

    @property
    def run_path(self) -> str:
        """The model's run endpoint, below ``base_url``."""
        return f"accounts/{self.account_id}/ai/run/{self.model_id}"

    @classmethod
    def read(cls, read: ConfigReader) -> WorkersAIConfig:
        """Read the provider's keys; ``ValueError`` names the bad one."""
        account_id = read.string("account_id")
        if not _ACCOUNT_ID.fullmatch(account_id):
            raise ValueError(
                f"provider 'workers-ai': account_id {account_id!r} must be the 32-character "
                f"hex id shown in the Cloudflare dashboard"
            )
        api_key = read.secret("api_key")
        model_id = read.string("model_id", MODEL_ID)
        if not _MODEL_ID.fullmatch(model_id):
            raise ValueError(
                f"provider 'workers-ai': model_id {model_id!r} must look like {MODEL_ID!r}"
            )
        return cls(
            account_id=account_id,
            api_key=api_key,
            model_id=model_id,
            default_prompt=read.string("default_prompt", DEFAULT_PROMPT),
        )
