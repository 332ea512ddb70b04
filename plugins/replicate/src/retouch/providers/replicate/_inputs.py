"""The ``input`` object of a create-prediction call, built from an inpaint request.

Files go as URLs: the object store's short-lived URL when the job context has one
(Replicate fetches it itself), otherwise a ``data:`` URL of the caller's original
bytes, re-encoded only when the model needs a different mask convention.
"""

from __future__ import annotations

import base64

from retouch.sdk import EncodedImage, InpaintRequest, JobContext, ProviderRejected, encode_png

from ._config import ModelSpec


def prediction_input(
    spec: ModelSpec, request: InpaintRequest, context: JobContext
) -> dict[str, object]:
    """The model's input for ``request``; :class:`ProviderRejected` naming the field when
    the model cannot take a knob the caller set."""
    values: dict[str, object] = dict(spec.input)
    values[spec.field_for("image")] = _image_ref(request, context)
    values[spec.field_for("mask")] = _mask_ref(spec, request, context)
    params = request.params
    knobs: dict[str, object | None] = {
        "prompt": params.prompt or None,
        "negative_prompt": params.negative_prompt or None,
        "steps": params.steps,
        "guidance_scale": params.guidance_scale,
        "strength": params.strength,
    }
    if params.steps is not None and params.steps > spec.max_steps:
        raise ProviderRejected(
            f"model {spec.name!r} runs at most {spec.max_steps} steps; ask for fewer",
            field="steps",
        )
    for knob, value in knobs.items():
        if value is None:
            continue
        name = spec.field_for(knob)
        if not name:
            raise ProviderRejected(
                f"model {spec.name!r} ({spec.model}) takes no {knob.replace('_', ' ')}; leave "
                f"it unset or choose a model that does",
                field=knob,
            )
        values[name] = value
    if spec.field_for("seed"):
        values[spec.field_for("seed")] = request.seed
    return values


def _image_ref(request: InpaintRequest, context: JobContext) -> str:
    if context.image_url:
        return context.image_url
    if context.image is not None:
        return data_url(context.image)
    return data_url(EncodedImage(encode_png(request.image), "image/png"))


def _mask_ref(spec: ModelSpec, request: InpaintRequest, context: JobContext) -> str:
    if spec.mask_replaces_white:
        if context.mask_url:
            return context.mask_url
        if context.mask is not None:
            return data_url(context.mask)
        return data_url(EncodedImage(encode_png(request.mask), "image/png"))
    return data_url(EncodedImage(encode_png(255 - request.mask), "image/png"))


def data_url(image: EncodedImage) -> str:
    """``image`` as a ``data:`` URL."""
    return f"data:{image.content_type};base64,{base64.b64encode(image.data).decode('ascii')}"
