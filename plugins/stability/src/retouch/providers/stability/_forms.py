"""From an edit request to one v2beta call: which service, which form fields and files.

Everything here is checked against the documented limits before a byte is sent, so a
request the API would refuse is rejected naming our field, at no cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retouch.sdk import (
    EditRequest,
    EnhanceKind,
    EnhanceRequest,
    InpaintRequest,
    OutpaintRequest,
    ProviderRejected,
)

from ._config import StabilityConfig
from ._endpoints import FAST_UPSCALE_FACTOR, OUTPAINT_MAX_PX, PROMPT_MAX_CHARS, SEED_MAX, Service


@dataclass(frozen=True, slots=True)
class Call:
    """One planned request: the service, its text fields, and the expected output size.

    ``files`` names the image parts to attach (``image``, and ``mask`` for inpaint and
    erase); the provider supplies their bytes.
    """

    service: Service
    fields: dict[str, str]
    files: tuple[str, ...]
    output_size: tuple[int, int]
    """(width, height) the provider must hand back; the service's answer is resized to it
    when it differs (conservative and creative upscales answer about 4 megapixels)."""
    notes: dict[str, str] = field(default_factory=dict)


def plan(request: EditRequest, config: StabilityConfig) -> Call:
    """The call that carries out ``request``; raise ProviderRejected when none can."""
    if isinstance(request, InpaintRequest):
        return _inpaint(request, config)
    if isinstance(request, OutpaintRequest):
        return _outpaint(request, config)
    return _upscale(request, config)


def _inpaint(request: InpaintRequest, config: StabilityConfig) -> Call:
    height, width = request.image.shape[:2]
    prompt = request.params.prompt.strip()
    if prompt or config.unprompted_inpaint == "inpaint":
        service = Service.INPAINT
        fields = {"prompt": _prompt(prompt or config.default_prompt, "prompt")}
        if request.params.negative_prompt:
            fields["negative_prompt"] = _prompt(request.params.negative_prompt, "negative_prompt")
    else:
        service, fields = Service.ERASE, {}
    _check_input(service, width, height)
    fields |= {"grow_mask": str(config.grow_mask), **_common(request.seed, config)}
    return Call(service, fields, ("image", "mask"), (width, height))


def _outpaint(request: OutpaintRequest, config: StabilityConfig) -> Call:
    height, width = request.image.shape[:2]
    padding = request.padding
    if padding.is_empty:
        raise ProviderRejected("outpaint needs padding on at least one side", field="padding")
    sides = {
        "left": padding.left,
        "right": padding.right,
        "up": padding.top,
        "down": padding.bottom,
    }
    over = [f"{name} {px}" for name, px in sides.items() if px > OUTPAINT_MAX_PX]
    if over:
        raise ProviderRejected(
            f"Stability outpaints at most {OUTPAINT_MAX_PX} pixels per side (asked for "
            f"{', '.join(over)}): outpaint in several steps",
            field="padding",
        )
    _check_input(Service.OUTPAINT, width, height)
    fields = {name: str(px) for name, px in sides.items() if px}
    if request.params.prompt.strip():
        fields["prompt"] = _prompt(request.params.prompt.strip(), "prompt")
    fields |= _common(request.seed, config)
    return Call(Service.OUTPAINT, fields, ("image",), request.output_size)


def _upscale(request: EnhanceRequest, config: StabilityConfig) -> Call:
    if request.kind is not EnhanceKind.UPSCALE:
        raise ProviderRejected(
            f"the stability provider only upscales; it cannot {request.kind.value}",
            field="kind",
        )
    service = config.upscaler(request.scale)
    if service is None:
        raise ProviderRejected(
            f"cannot upscale by {request.scale}; the stability provider upscales by 2 or 4",
            field="scale",
        )
    height, width = request.image.shape[:2]
    _check_input(service, width, height)
    out_width, out_height = request.output_size
    limit = service.limits.output_pixels
    if limit is not None and out_width * out_height > limit:
        raise ProviderRejected(
            f"{service.label} answers about {limit:,} pixels, less than the "
            f"{out_width} x {out_height} a x{request.scale} upscale of this image needs: "
            f"upscale a smaller image or configure another upscaler",
            field="scale",
        )
    fields = {}
    if service.limits.needs_prompt:
        fields["prompt"] = config.upscale_prompt
    if service is not Service.UPSCALE_FAST:
        # Fast upscale takes only the image and the output format.
        fields["seed"] = _seed(request.seed)
    fields["output_format"] = config.output_format
    notes = {}
    if service is Service.UPSCALE_FAST and request.scale != FAST_UPSCALE_FACTOR:
        notes["resized_from"] = f"x{FAST_UPSCALE_FACTOR}"
    return Call(service, fields, ("image",), (out_width, out_height), notes)


def _check_input(service: Service, width: int, height: int) -> None:
    problem = service.limits.problem(width, height)
    if problem is not None:
        raise ProviderRejected(
            f"Stability's {service.label} cannot take this {width} x {height} image: {problem}",
            field="image",
        )


def _prompt(text: str, field_name: str) -> str:
    if len(text) > PROMPT_MAX_CHARS:
        raise ProviderRejected(
            f"{field_name} has {len(text)} characters; Stability takes at most {PROMPT_MAX_CHARS}",
            field=field_name,
        )
    return text


def _common(seed: int, config: StabilityConfig) -> dict[str, str]:
    return {"seed": _seed(seed), "output_format": config.output_format}


def _seed(seed: int) -> str:
    # Stability takes 0..4294967294 and treats 0 as "pick one"; the seed it used comes
    # back with the image, and that is the one we report.
    return str(seed % (SEED_MAX + 1))
