"""The option messages edits share: output, provider choice, generation knobs."""

from __future__ import annotations

from retouch.v1 import common_pb2

from ._events import FORMATS, PREFERENCES, Format, Preference


def output_options(
    format: Format | None, quality: int, inline: bool, previews: bool = False
) -> common_pb2.OutputOptions:
    """The result encoding and delivery options of an edit, and whether its progress
    events carry previews."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    return common_pb2.OutputOptions(
        format=FORMATS[format] if format else common_pb2.IMAGE_FORMAT_UNSPECIFIED,
        quality=quality,
        inline=inline,
        previews=previews,
    )


def provider_choice(
    provider: str, model: str, prefer: Preference | None, max_cost_credits: int | None
) -> common_pb2.ProviderChoice:
    """Which provider an edit asks for; empty fields let the server route."""
    if prefer is not None and prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {', '.join(PREFERENCES)}, not {prefer!r}")
    return common_pb2.ProviderChoice(
        provider=provider,
        model=model,
        prefer=PREFERENCES[prefer] if prefer else common_pb2.ROUTE_PREFERENCE_UNSPECIFIED,
        max_cost_credits=max_cost_credits,
    )


def generation_params(
    prompt: str,
    negative_prompt: str,
    strength: float | None,
    guidance_scale: float | None,
    steps: int | None,
    seed: int | None,
) -> common_pb2.GenerationParams:
    """The prompt and sampling knobs of an edit; ``None`` leaves a knob unset."""
    return common_pb2.GenerationParams(
        prompt=prompt,
        negative_prompt=negative_prompt,
        strength=strength,
        guidance_scale=guidance_scale,
        steps=steps,
        seed=seed,
    )
