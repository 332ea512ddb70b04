"""The provider's config table, validated by ``start`` before any job runs.

Every model is a table under ``models``; the key is the model name callers use::

    [providers.replicate.models.sd-inpaint]
    model = "stability-ai/stable-diffusion-inpainting"
    version = "95b7223104132402a9ae91cc677285bc5eb997834bd2349fa486f53910fd68b3"

``fields`` maps retouch's knobs to the model's input names (``""`` = the model has no
such input), ``input`` adds fixed inputs, and ``mask`` says which colour the model
repaints. See the plugin's README for a full example.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from retouch.sdk import ConfigReader, CostModel, Secret
from retouch.sdk.http import HttpConfig

MAX_WAIT_S = 60
"""The longest ``Prefer: wait`` Replicate honours."""

HTTP_DEFAULTS = HttpConfig(
    base_url="https://api.replicate.com/v1",
    # A sync-mode create holds the answer back up to MAX_WAIT_S.
    read_timeout=MAX_WAIT_S + 15.0,
    download_hosts=("replicate.delivery", "*.replicate.delivery"),
)

SD_INPAINTING = "stability-ai/stable-diffusion-inpainting"
SD_INPAINTING_VERSION = "95b7223104132402a9ae91cc677285bc5eb997834bd2349fa486f53910fd68b3"

KNOBS = (
    "image",
    "mask",
    "prompt",
    "negative_prompt",
    "steps",
    "guidance_scale",
    "strength",
    "seed",
)
"""The request values a model may take, in the order they are sent."""

SD_FIELDS: Mapping[str, str] = {
    "image": "image",
    "mask": "mask",
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "steps": "num_inference_steps",
    "guidance_scale": "guidance_scale",
    "strength": "",
    "seed": "seed",
}
"""Input names of Stable Diffusion inpainting models on Replicate."""

_OWNER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*", re.IGNORECASE)
_VERSION = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One Replicate model as callers know it."""

    name: str
    model: str
    """``owner/name`` on Replicate."""
    version: str | None = None
    """The version id; ``None`` runs the model's latest (official models only)."""
    fields: Mapping[str, str] = field(default_factory=lambda: dict(SD_FIELDS))
    input: Mapping[str, object] = field(default_factory=dict)
    mask_replaces_white: bool = True
    max_steps: int = 500

    def field_for(self, knob: str) -> str:
        """The model's input name for ``knob``, or "" when it has none."""
        return self.fields.get(knob, "")


DEFAULT_MODELS = (
    ModelSpec(
        name="sd-inpaint",
        model=SD_INPAINTING,
        version=SD_INPAINTING_VERSION,
        input={"num_outputs": 1},
    ),
)


@dataclass(frozen=True, slots=True)
class ReplicateConfig:
    """The Replicate provider's own settings (see the README for each key); the HTTP
    keys are read by :class:`~retouch.sdk.http.HttpConfig`."""

    api_key: Secret | None = None
    wait_s: int = 10
    poll_interval_s: float = 1.0
    cancel_timeout_s: float = 1.0
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    cost: CostModel = field(
        default_factory=lambda: CostModel(
            credits_per_job=1, credits_per_predict_second=1.0, metered_reserve=30
        )
    )

    def model(self, name: str) -> ModelSpec | None:
        return next((spec for spec in self.models if spec.name == name), None)

    @classmethod
    def read(cls, read: ConfigReader) -> ReplicateConfig:
        """Read the provider's keys; ``ValueError`` names the bad one."""
        api_key = read.secret("api_key")
        wait_s = read.integer("wait_s", 10, minimum=0, maximum=MAX_WAIT_S)
        poll_interval_s = read.number("poll_interval_s", 1.0, minimum=0.05, maximum=60.0)
        cancel_timeout_s = read.number("cancel_timeout_s", 1.0, minimum=0.05, maximum=10.0)
        cost = CostModel(
            credits_per_job=read.integer("credits_per_job", 1, minimum=0),
            credits_per_predict_second=read.number("credits_per_predict_second", 1.0, minimum=0),
            metered_reserve=read.integer("metered_reserve", 30, minimum=0),
        )
        models: tuple[ModelSpec, ...] = DEFAULT_MODELS
        if read.has("models"):
            models = tuple(_model(name, table) for name, table in read.table("models").items())
            if not models:
                raise ValueError("provider 'replicate': models must name at least one model")
        return cls(
            api_key=api_key,
            wait_s=wait_s,
            poll_interval_s=poll_interval_s,
            cancel_timeout_s=cancel_timeout_s,
            models=models,
            cost=cost,
        )


def _model(name: str, table: object) -> ModelSpec:
    where = f"replicate models.{name}"
    if not isinstance(table, Mapping):
        raise ValueError(f"provider {where!r}: must be a table")
    read = ConfigReader(where, table)
    model = read.string("model")
    if not _OWNER_NAME.fullmatch(model):
        raise ValueError(f"provider {where!r}: model {model!r} must be owner/name")
    version = read.optional_string("version")
    if version is not None and not _VERSION.fullmatch(version):
        raise ValueError(
            f"provider {where!r}: version {version!r} must be the 64-character hex version id"
        )
    fields = dict(SD_FIELDS)
    for knob, value in read.table("fields").items():
        if knob not in KNOBS:
            raise ValueError(
                f"provider {where!r}: fields.{knob} is not a knob (known: {', '.join(KNOBS)})"
            )
        if not isinstance(value, str):
            raise ValueError(f'provider {where!r}: fields.{knob} must be an input name or ""')
        fields[knob] = value
    if not fields["image"] or not fields["mask"]:
        raise ValueError(f"provider {where!r}: fields.image and fields.mask must be named")
    mask = read.string("mask", "white", choices=("white", "black"))
    spec = ModelSpec(
        name=name,
        model=model,
        version=version,
        fields=fields,
        input=dict(read.table("input")),
        mask_replaces_white=mask == "white",
        max_steps=read.integer("max_steps", 500, minimum=1),
    )
    read.finish()
    return spec
