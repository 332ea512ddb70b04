"""Validating an edit request and preparing it for a provider, before anything is spent.

Cheap checks on the request's fields come first, all reported together; then the inputs
are read and decoded once, off the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from google.protobuf.message import Message

from retouch.sdk import (
    EditRequest,
    EnhanceKind,
    EnhanceRequest,
    InpaintRequest,
    Operation,
    OutpaintRequest,
    Padding,
    RGBImage,
    composite,
)
from retouch.v1 import common_pb2, image_edit_pb2

from .auth import Caller
from .config import ServerConfig
from .convert import ENHANCE_KINDS, FORMATS_FROM_PROTO, PREFERENCES, generation_params
from .errors import FieldViolation, InvalidArgument
from .imaging import decode_image, decode_mask, mask_from_alpha, prepare_mask
from .inputs import InputResolver
from .policy import EditIntent
from .request_checks import request_violations
from .routing import RouteRequest
from .telemetry import stage

T = TypeVar("T")

MAX_PADDING = 4096
MAX_MASK_OPTION = 256
DEFAULT_QUALITY = 90
DEFAULT_STRENGTH = 0.5


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """How the result is encoded and delivered."""

    format: str
    quality: int
    inline: bool


@dataclass(frozen=True, slots=True)
class PreparedEdit:
    """A validated, decoded edit, ready for the router and a provider."""

    operation: Operation
    route: RouteRequest
    output_size: tuple[int, int]
    output: OutputSpec
    seed: int
    make_request: Callable[[str, int], EditRequest]
    """Builds the provider request for a model and seed."""
    finish: Callable[[RGBImage], RGBImage]
    """Applied to the provider's image (in a worker thread): keeps unmasked pixels."""


class Gate(Protocol):
    """The policy's say on an edit: called once its fields are valid, and once decoded."""

    async def admit(self, intent: EditIntent) -> None: ...

    def check_pixels(self, width: int, height: int) -> None: ...


class OpenGate:
    """A gate that lets everything through (no policy)."""

    async def admit(self, intent: EditIntent) -> None:
        return None

    def check_pixels(self, width: int, height: int) -> None:
        return None


class EditPreparer:
    """Turns ImageEdit requests into :class:`PreparedEdit`s, or INVALID_ARGUMENT."""

    def __init__(
        self, inputs: InputResolver, config: ServerConfig, rng: random.Random | None = None
    ) -> None:
        self._inputs = inputs
        self._config = config
        self._rng = rng or random.SystemRandom()

    async def inpaint(
        self, request: image_edit_pb2.InpaintRequest, caller: Caller, gate: Gate
    ) -> PreparedEdit:
        violations = _common(request, request.output, request.params)
        options = request.mask_options
        for name in ("grow_px", "feather_px"):
            if getattr(options, name) > MAX_MASK_OPTION:
                violations.append(
                    FieldViolation(f"mask_options.{name}", f"{name} must be 0..{MAX_MASK_OPTION}")
                )
        _raise_if(violations)
        with stage("policy.admit"):
            await gate.admit(_intent(request.output, request.provider, request.params))
        image_bytes = await self._inputs.read(request.image, caller, field="image")
        mask_bytes = (
            await self._inputs.read(request.mask, caller, field="mask")
            if request.HasField("mask")
            else None
        )
        max_pixels = self._config.max_pixels

        def decode() -> tuple[RGBImage, np.ndarray, np.ndarray]:
            image = decode_image(image_bytes, field="image", max_pixels=max_pixels)
            gate.check_pixels(image.width, image.height)
            size = (image.width, image.height)
            if mask_bytes is not None:
                raw = decode_mask(mask_bytes, field="mask", size=size, max_pixels=max_pixels)
            elif image.alpha is not None:
                raw = mask_from_alpha(image.alpha)
            else:
                raise InvalidArgument(
                    "mask",
                    "a mask is required: send one (white = replace) or an image whose "
                    "transparent pixels mark the region to replace",
                )
            prepared = prepare_mask(
                raw, invert=options.invert, grow_px=options.grow_px, feather_px=options.feather_px
            )
            return image.pixels, prepared.binary, prepared.alpha

        with stage("validation"):
            pixels, binary, alpha = await off_loop(decode, size=len(image_bytes))
        height, width = pixels.shape[:2]
        params = generation_params(request.params)

        def make(model: str, seed: int) -> EditRequest:
            return InpaintRequest(image=pixels, mask=binary, model=model, seed=seed, params=params)

        return PreparedEdit(
            operation=Operation.INPAINT,
            route=_route(Operation.INPAINT, width, height, request.provider),
            output_size=(width, height),
            output=_output(request.output),
            seed=self._seed(request.params),
            make_request=make,
            finish=lambda edited: composite(pixels, edited, alpha),
        )

    async def outpaint(
        self, request: image_edit_pb2.OutpaintRequest, caller: Caller, gate: Gate
    ) -> PreparedEdit:
        violations = _common(request, request.output, request.params)
        padding = Padding(request.left, request.right, request.top, request.bottom)
        if padding.is_empty:
            violations.append(
                FieldViolation("left", "add pixels on at least one side (left/right/top/bottom)")
            )
        for side in ("left", "right", "top", "bottom"):
            if getattr(request, side) > MAX_PADDING:
                violations.append(FieldViolation(side, f"{side} must be 0..{MAX_PADDING} pixels"))
        if request.feather_px > MAX_MASK_OPTION:
            violations.append(
                FieldViolation("feather_px", f"feather_px must be 0..{MAX_MASK_OPTION}")
            )
        _raise_if(violations)
        with stage("policy.admit"):
            await gate.admit(_intent(request.output, request.provider, request.params))
        image_bytes = await self._inputs.read(request.image, caller, field="image")
        with stage("validation"):
            image = await off_loop(
                lambda: decode_image(
                    image_bytes, field="image", max_pixels=self._config.max_pixels
                ),
                size=len(image_bytes),
            )
        pixels = image.pixels
        height, width = pixels.shape[:2]
        gate.check_pixels(width, height)
        out_w, out_h = width + padding.left + padding.right, height + padding.top + padding.bottom
        self._check_output(out_w, out_h)
        params = generation_params(request.params)
        feather = request.feather_px

        def make(model: str, seed: int) -> EditRequest:
            return OutpaintRequest(
                image=pixels, padding=padding, model=model, seed=seed, params=params
            )

        def finish(edited: RGBImage) -> RGBImage:
            canvas = np.zeros((out_h, out_w, 3), np.uint8)
            region = (
                slice(padding.top, padding.top + height),
                slice(padding.left, padding.left + width),
            )
            canvas[region] = pixels
            new_area = np.full((out_h, out_w), 255, np.uint8)
            new_area[region] = 0
            blend = prepare_mask(new_area, invert=False, grow_px=0, feather_px=feather).alpha
            return composite(canvas, edited, blend)

        return PreparedEdit(
            operation=Operation.OUTPAINT,
            route=_route(Operation.OUTPAINT, width, height, request.provider),
            output_size=(out_w, out_h),
            output=_output(request.output),
            seed=self._seed(request.params),
            make_request=make,
            finish=finish,
        )

    async def enhance(
        self, request: image_edit_pb2.EnhanceRequest, caller: Caller, gate: Gate
    ) -> PreparedEdit:
        violations = _common(request, request.output, None)
        kind = ENHANCE_KINDS.get(request.kind)
        if kind is None:
            violations.append(
                FieldViolation("kind", "kind is required: UPSCALE, DENOISE or SHARPEN")
            )
        if kind is EnhanceKind.UPSCALE and request.scale not in (2, 4):
            violations.append(FieldViolation("scale", "scale must be 2 or 4 for UPSCALE"))
        strength = request.strength if request.HasField("strength") else DEFAULT_STRENGTH
        if not 0.0 <= strength <= 1.0:
            violations.append(FieldViolation("strength", "strength must be 0..1"))
        _raise_if(violations)
        assert kind is not None
        with stage("policy.admit"):
            await gate.admit(_intent(request.output, request.provider, None, strength))
        image_bytes = await self._inputs.read(request.image, caller, field="image")
        with stage("validation"):
            image = await off_loop(
                lambda: decode_image(
                    image_bytes, field="image", max_pixels=self._config.max_pixels
                ),
                size=len(image_bytes),
            )
        pixels = image.pixels
        height, width = pixels.shape[:2]
        gate.check_pixels(width, height)
        scale = request.scale if kind is EnhanceKind.UPSCALE else 1
        self._check_output(width * scale, height * scale)

        def make(model: str, seed: int) -> EditRequest:
            return EnhanceRequest(
                image=pixels, kind=kind, model=model, seed=seed, scale=scale, strength=strength
            )

        route = _route(Operation.ENHANCE, width, height, request.provider)
        route = dataclasses.replace(route, enhance_kind=kind.value)
        if kind is EnhanceKind.UPSCALE:
            route = dataclasses.replace(route, upscale=scale)
        return PreparedEdit(
            operation=Operation.ENHANCE,
            route=route,
            output_size=(width * scale, height * scale),
            output=_output(request.output),
            seed=self._rng.randrange(2**32),
            make_request=make,
            finish=lambda edited: edited,
        )

    def _seed(self, params: common_pb2.GenerationParams) -> int:
        return params.seed if params.HasField("seed") else self._rng.randrange(2**32)

    def _check_output(self, width: int, height: int) -> None:
        limit = self._config.max_output_pixels
        if width * height > limit:
            raise InvalidArgument(
                "image",
                f"the result would be {width}x{height} = {width * height} pixels; "
                f"the limit is {limit}",
            )


SMALL_INPUT_BYTES = 32 * 1024
"""Inputs this small decode in well under a millisecond: cheaper inline than a thread hop."""


async def off_loop(work: Callable[[], T], *, size: int) -> T:
    """Run CPU ``work`` in a worker thread, unless its input is small enough that the
    hop would cost more than the work (the event loop is blocked for well under 1 ms)."""
    if size <= SMALL_INPUT_BYTES:
        return work()
    return await asyncio.to_thread(work)


def _common(
    request: Message,
    output: common_pb2.OutputOptions,
    params: common_pb2.GenerationParams | None,
) -> list[FieldViolation]:
    # Over-long ids and names, unknown enum values (formats, preferences, kinds).
    violations = request_violations(request)
    if output.quality > 100:
        violations.append(FieldViolation("output.quality", "output.quality must be 0..100"))
    if params is not None:
        if params.HasField("strength") and not 0.0 <= params.strength <= 1.0:
            violations.append(FieldViolation("params.strength", "strength must be 0..1"))
        if params.HasField("guidance_scale") and not 0.0 <= params.guidance_scale <= 30.0:
            violations.append(
                FieldViolation("params.guidance_scale", "guidance_scale must be 0..30")
            )
        if params.HasField("steps") and not 1 <= params.steps <= 150:
            violations.append(FieldViolation("params.steps", "steps must be 1..150"))
        for name in ("prompt", "negative_prompt"):
            if len(getattr(params, name)) > 4000:
                violations.append(
                    FieldViolation(f"params.{name}", f"{name} is longer than 4000 characters")
                )
    return violations


def _raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument.of(violations)


def _output(options: common_pb2.OutputOptions) -> OutputSpec:
    return OutputSpec(
        format=FORMATS_FROM_PROTO.get(options.format, "PNG"),
        quality=options.quality or DEFAULT_QUALITY,
        inline=options.inline,
    )


def _route(
    operation: Operation, width: int, height: int, choice: common_pb2.ProviderChoice
) -> RouteRequest:
    return RouteRequest(
        operation,
        width,
        height,
        provider=choice.provider,
        model=choice.model,
        prefer=PREFERENCES.get(choice.prefer, "cost"),
        max_cost=choice.max_cost_credits if choice.HasField("max_cost_credits") else None,
    )


def _intent(
    output: common_pb2.OutputOptions,
    choice: common_pb2.ProviderChoice,
    params: common_pb2.GenerationParams | None,
    strength: float | None = None,
) -> EditIntent:
    if params is not None and params.HasField("strength"):
        strength = params.strength
    return EditIntent(
        output_format=_output(output).format,
        provider=choice.provider,
        steps=params.steps if params is not None and params.HasField("steps") else None,
        strength=strength,
    )
