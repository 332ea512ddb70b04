"""The admit and prepare stages of an edit: its fields checked, its inputs decoded once.

:meth:`EditPreparer.check` runs the cheap checks on a request's fields, all reported
together, and says what the edit asks of the caller's plan (:class:`EditIntent`).
:meth:`EditPreparer.inspect` then reads the inputs and checks them from their headers
into an :class:`InspectedEdit` (enough to route and queue the job), and
:meth:`EditPreparer.decode` decodes them once, off the event loop, into a
:class:`PreparedEdit`: plain data that the later stages read —
:func:`provider_request` builds what the provider gets, :func:`keep_unedited` puts the
pixels outside the edit back after it ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from retouch.sdk import (
    EditRequest,
    EncodedImage,
    EnhanceKind,
    EnhanceRequest,
    GenerationParams,
    InpaintRequest,
    Mask,
    Operation,
    OutpaintRequest,
    Padding,
    RGBImage,
    composite,
)
from retouch.v1 import common_pb2
from retouch.v1 import image_edit_pb2 as pb

from .auth import Caller
from .config import ServerConfig
from .convert import ENHANCE_KINDS, FORMATS_FROM_PROTO, PREFERENCES, generation_params
from .errors import FieldViolation, InvalidArgument
from .imaging import (
    CONTENT_TYPES,
    DecodedImage,
    Header,
    decode_image,
    decode_mask_levels,
    inspect_image,
    mask_from_alpha,
    prepare_mask,
)
from .inputs import InputFile, InputResolver
from .policy import EditIntent, Plan, check_pixels
from .request_checks import request_violations
from .routing import RouteRequest
from .telemetry import stage

T = TypeVar("T")

EditMessage = pb.InpaintRequest | pb.OutpaintRequest | pb.EnhanceRequest
"""The ImageEdit requests that start a job."""


def operation_of(request: EditMessage) -> Operation:
    """The operation an ImageEdit request asks for."""
    if isinstance(request, pb.InpaintRequest):
        return Operation.INPAINT
    if isinstance(request, pb.OutpaintRequest):
        return Operation.OUTPAINT
    return Operation.ENHANCE


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
    previews: bool = False
    """Whether the job's progress events carry JPEG previews."""


@dataclass(frozen=True, slots=True)
class InpaintSpec:
    """An inpaint: the region to replace, and how the result is blended back."""

    mask: Mask
    """0 or 255: what the provider is asked to replace."""
    blend: Mask
    """Blend weights for :func:`retouch.sdk.composite` (the feathered mask)."""
    params: GenerationParams


@dataclass(frozen=True, slots=True)
class OutpaintSpec:
    """An outpaint: the pixels to add on each side, and the seam's feather."""

    padding: Padding
    feather_px: int
    params: GenerationParams


@dataclass(frozen=True, slots=True)
class EnhanceSpec:
    """An enhancement of the whole image."""

    kind: EnhanceKind
    scale: int
    strength: float


EditSpec = InpaintSpec | OutpaintSpec | EnhanceSpec


@dataclass(frozen=True, slots=True)
class SourceFiles:
    """The caller's inputs as sent, which a remote provider may forward unchanged.

    ``image`` is left out when its pixels are turned by EXIF orientation (the provider
    would see them unturned), ``mask`` unless the file says the mask verbatim (white =
    replace, already binary, no invert or grow applied). The keys name the objects
    they came from (an upload or earlier result), for a presigned URL.
    """

    image: EncodedImage | None
    mask: EncodedImage | None = None
    image_key: str | None = None
    mask_key: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedEdit:
    """A validated, decoded edit, ready for the router and a provider."""

    operation: Operation
    route: RouteRequest
    output_size: tuple[int, int]
    output: OutputSpec
    seed: int
    image: RGBImage
    """The input, decoded once."""
    sources: SourceFiles
    """The inputs as the caller sent them (encoded), for remote providers."""
    spec: EditSpec


MASK_REQUIRED = (
    "a mask is required: send one (white = replace) or an image whose transparent "
    "pixels mark the region to replace"
)


@dataclass(frozen=True, slots=True)
class InpaintMask:
    """An inpaint's mask, prepared: what to replace, how to blend, and the content type
    the caller's mask file may be forwarded under (None when it must not be)."""

    binary: Mask
    blend: Mask
    content_type: str | None

    @property
    def fraction(self) -> float:
        """The share of the image to replace."""
        return np.count_nonzero(self.binary) / self.binary.size


@dataclass(frozen=True, slots=True)
class InspectedEdit:
    """An edit whose fields, inputs and headers passed: enough to route, price and
    queue it.

    It holds the encoded inputs (``request`` still carries inline bytes) and, until
    :meth:`encoded_only`, what inspecting it had to decode: an inpaint's prepared
    ``mask``, or the whole ``decoded`` edit when the mask was the image's alpha.
    :meth:`EditPreparer.decode` makes the :class:`PreparedEdit`.
    """

    operation: Operation
    route: RouteRequest
    output_size: tuple[int, int]
    output: OutputSpec
    seed: int
    request: EditMessage
    image: InputFile
    mask_file: InputFile | None = None
    mask: InpaintMask | None = None
    decoded: PreparedEdit | None = None

    def encoded_only(self) -> InspectedEdit:
        """This edit without any pixels: what a job waiting for a slot keeps."""
        if self.mask is None and self.decoded is None:
            return self
        return dataclasses.replace(self, mask=None, decoded=None)


def provider_request(edit: PreparedEdit, model: str) -> EditRequest:
    """What the provider gets for ``edit`` on ``model``."""
    spec, image, seed = edit.spec, edit.image, edit.seed
    if isinstance(spec, InpaintSpec):
        return InpaintRequest(
            image=image, mask=spec.mask, model=model, seed=seed, params=spec.params
        )
    if isinstance(spec, OutpaintSpec):
        return OutpaintRequest(
            image=image, padding=spec.padding, model=model, seed=seed, params=spec.params
        )
    return EnhanceRequest(
        image=image,
        kind=spec.kind,
        model=model,
        seed=seed,
        scale=spec.scale,
        strength=spec.strength,
    )


def keep_unedited(edit: PreparedEdit, edited: RGBImage) -> RGBImage:
    """The provider's image with every pixel outside the edit exactly as it came in.

    An inpaint is composited into ``edit.image`` itself, whose pixels outside the
    blend's bounding box are already the answer: only that box is written, and
    ``edit.image`` holds the result afterwards. CPU work: call it off the event loop."""
    spec, original = edit.spec, edit.image
    if isinstance(spec, InpaintSpec):
        into = original if original.flags.writeable else None
        return composite(original, edited, spec.blend, out=into)
    if isinstance(spec, OutpaintSpec):
        out_w, out_h = edit.output_size
        height, width = original.shape[:2]
        padding = spec.padding
        region = (
            slice(padding.top, padding.top + height),
            slice(padding.left, padding.left + width),
        )
        canvas = np.zeros((out_h, out_w, 3), np.uint8)
        canvas[region] = original
        new_area = np.full((out_h, out_w), 255, np.uint8)
        new_area[region] = 0
        blend = prepare_mask(new_area, invert=False, grow_px=0, feather_px=spec.feather_px)
        return composite(canvas, edited, blend.alpha, out=canvas)
    return edited


class EditPreparer:
    """Checks ImageEdit requests and decodes them into :class:`PreparedEdit`s."""

    def __init__(
        self, inputs: InputResolver, config: ServerConfig, rng: random.Random | None = None
    ) -> None:
        self._inputs = inputs
        self._config = config
        self._rng = rng or random.SystemRandom()
        self._unslotted = asyncio.Semaphore(1)
        """Pixels decoded before a job holds its provider's slot (an inpaint's mask, to
        route it) are decoded one job at a time, so a burst of callers never holds
        them all at once; off the event loop, so other streams run meanwhile."""

    def check(self, request: EditMessage) -> EditIntent:
        """The admit stage's part that needs no I/O: every field violation at once
        (INVALID_ARGUMENT), else what the edit asks of the caller's plan."""
        if isinstance(request, pb.InpaintRequest):
            violations = _common(request, request.output, request.params)
            for name in ("grow_px", "feather_px"):
                if getattr(request.mask_options, name) > MAX_MASK_OPTION:
                    violations.append(
                        FieldViolation(
                            f"mask_options.{name}", f"{name} must be 0..{MAX_MASK_OPTION}"
                        )
                    )
            _raise_if(violations)
            return _intent(request.output, request.provider, request.params)
        if isinstance(request, pb.OutpaintRequest):
            violations = _common(request, request.output, request.params)
            if _padding(request).is_empty:
                violations.append(
                    FieldViolation(
                        "left", "add pixels on at least one side (left/right/top/bottom)"
                    )
                )
            for side in SIDES:
                if getattr(request, side) > MAX_PADDING:
                    violations.append(
                        FieldViolation(side, f"{side} must be 0..{MAX_PADDING} pixels")
                    )
            if request.feather_px > MAX_MASK_OPTION:
                violations.append(
                    FieldViolation("feather_px", f"feather_px must be 0..{MAX_MASK_OPTION}")
                )
            _raise_if(violations)
            return _intent(request.output, request.provider, request.params)
        violations = _common(request, request.output, None)
        kind = ENHANCE_KINDS.get(request.kind)
        if kind is None:
            violations.append(
                FieldViolation("kind", "kind is required: UPSCALE, DENOISE or SHARPEN")
            )
        if kind is EnhanceKind.UPSCALE and request.scale not in (2, 4):
            violations.append(FieldViolation("scale", "scale must be 2 or 4 for UPSCALE"))
        if not 0.0 <= _enhance_strength(request) <= 1.0:
            violations.append(FieldViolation("strength", "strength must be 0..1"))
        _raise_if(violations)
        return _intent(request.output, request.provider, None, _enhance_strength(request))

    async def inspect(self, request: EditMessage, caller: Caller, plan: Plan) -> InspectedEdit:
        """The prepare stage's first half, for a request :meth:`check` passed: read the
        inputs the caller may use and check them from their headers — format, size, the
        plan's pixel cap, the output's size — decoding no image pixels. An inpaint's
        mask is prepared too (it decides the share routing rules match on, and an empty
        or mis-sized mask is refused here); when the mask is the image's own alpha, the
        image is decoded for it."""
        with stage("validation"):
            return await self._inspect(request, caller, plan)

    async def _inspect(self, request: EditMessage, caller: Caller, plan: Plan) -> InspectedEdit:
        image = await self._inputs.fetch(request.image, caller, field="image")
        header = self._header(image)
        width, height = header.display_size
        check_pixels(plan, width, height)
        output = _output(request.output)
        if isinstance(request, pb.InpaintRequest):
            return await self._inspect_inpaint(request, caller, image, header, output)
        if isinstance(request, pb.OutpaintRequest):
            padding = _padding(request)
            out_w, out_h = (
                width + padding.left + padding.right,
                height + padding.top + padding.bottom,
            )
            sides = tuple(side for side in SIDES if getattr(request, side))
            self._check_output(out_w, out_h, sides)
            route = _route(
                Operation.OUTPAINT,
                width,
                height,
                request.provider,
                mask_fraction=1 - (width * height) / (out_w * out_h),
                prompt=bool(request.params.prompt.strip()),
                output_fields=sides,
            )
            return InspectedEdit(
                Operation.OUTPAINT,
                route,
                (out_w, out_h),
                output,
                self._seed(request.params),
                request,
                image,
            )
        kind, scale = ENHANCE_KINDS[request.kind], _scale(request)
        self._check_output(width * scale, height * scale)
        route = _route(Operation.ENHANCE, width, height, request.provider)
        route = dataclasses.replace(route, enhance_kind=kind.value)
        if kind is EnhanceKind.UPSCALE:
            route = dataclasses.replace(route, upscale=scale)
        return InspectedEdit(
            Operation.ENHANCE,
            route,
            (width * scale, height * scale),
            output,
            self._rng.randrange(2**32),
            request,
            image,
        )

    async def decode(self, edit: InspectedEdit) -> PreparedEdit:
        """The prepare stage's second half: the inputs decoded, once, off the event
        loop. Run it once the job holds its provider's slot, so pixel buffers are
        bounded by capacity; raises INVALID_ARGUMENT for pixels the headers hid (a
        truncated or corrupt file)."""
        if edit.decoded is not None:
            return edit.decoded
        with stage("decode"):
            return await self._decode_edit(edit)

    async def _decode_edit(self, edit: InspectedEdit) -> PreparedEdit:
        request = edit.request
        size = edit.route.width, edit.route.height
        if isinstance(request, pb.InpaintRequest):
            mask = edit.mask or await self._prepare_mask(request, edit.mask_file, edit.output_size)
            decoded = await self._decode(edit.image.data, size)
            return self._inpaint(edit, request, decoded, mask)
        decoded = await self._decode(edit.image.data, size)
        if isinstance(request, pb.OutpaintRequest):
            spec: EditSpec = OutpaintSpec(
                _padding(request), request.feather_px, generation_params(request.params)
            )
        else:
            kind = ENHANCE_KINDS[request.kind]
            spec = EnhanceSpec(kind, _scale(request), _enhance_strength(request))
        return _prepared(edit, decoded, _sources(edit.image, decoded), spec)

    async def _inspect_inpaint(
        self,
        request: pb.InpaintRequest,
        caller: Caller,
        image: InputFile,
        header: Header,
        output: OutputSpec,
    ) -> InspectedEdit:
        size = header.display_size
        mask_file = (
            await self._inputs.fetch(request.mask, caller, field="mask")
            if request.HasField("mask")
            else None
        )
        inspected = InspectedEdit(
            Operation.INPAINT,
            _route(
                Operation.INPAINT,
                *size,
                request.provider,
                prompt=bool(request.params.prompt.strip()),
            ),
            size,
            output,
            self._seed(request.params),
            request,
            image,
            mask_file,
        )
        async with self._unslotted:
            if mask_file is not None:
                mask = await self._prepare_mask(request, mask_file, size)
                inspected = dataclasses.replace(inspected, mask=mask)
            else:
                decoded, mask = await self._decode_with_alpha_mask(request, image.data, size)
                inspected = dataclasses.replace(
                    inspected, decoded=self._inpaint(inspected, request, decoded, mask)
                )
        return dataclasses.replace(
            inspected,
            route=dataclasses.replace(inspected.route, mask_fraction=mask.fraction),
        )

    def _inpaint(
        self,
        edit: InspectedEdit,
        request: pb.InpaintRequest,
        decoded: DecodedImage,
        mask: InpaintMask,
    ) -> PreparedEdit:
        sources = _sources(edit.image, decoded)
        if mask.content_type is not None and edit.mask_file is not None:
            sources = dataclasses.replace(
                sources,
                mask=EncodedImage(edit.mask_file.data, mask.content_type),
                mask_key=edit.mask_file.object_key,
            )
        spec = InpaintSpec(mask.binary, mask.blend, generation_params(request.params))
        return _prepared(edit, decoded, sources, spec)

    async def _prepare_mask(
        self, request: pb.InpaintRequest, mask_file: InputFile | None, size: tuple[int, int]
    ) -> InpaintMask:
        if mask_file is None:
            raise InvalidArgument("mask", MASK_REQUIRED)
        data = mask_file.data
        options = request.mask_options
        max_pixels = self._config.max_pixels

        def prepare() -> InpaintMask:
            levels = decode_mask_levels(data, field="mask", size=size, max_pixels=max_pixels)
            mask = prepare_mask(
                levels.levels,
                invert=options.invert,
                grow_px=options.grow_px,
                feather_px=options.feather_px,
            )
            verbatim = (
                not options.invert and not options.grow_px and levels.forwardable(mask.binary)
            )
            content_type = CONTENT_TYPES[levels.format] if verbatim else None
            return InpaintMask(mask.binary, mask.alpha, content_type)

        return await off_loop(prepare, size=decoded_bytes(data, size, MASK))

    async def _decode_with_alpha_mask(
        self, request: pb.InpaintRequest, data: bytes, size: tuple[int, int]
    ) -> tuple[DecodedImage, InpaintMask]:
        options = request.mask_options
        max_pixels = self._config.max_pixels

        def decode() -> tuple[DecodedImage, InpaintMask]:
            decoded = decode_image(data, field="image", max_pixels=max_pixels)
            if decoded.alpha is None:
                raise InvalidArgument("mask", MASK_REQUIRED)
            mask = prepare_mask(
                mask_from_alpha(decoded.alpha),
                invert=options.invert,
                grow_px=options.grow_px,
                feather_px=options.feather_px,
            )
            return decoded, InpaintMask(mask.binary, mask.alpha, None)

        with stage("decode"):
            return await off_loop(decode, size=decoded_bytes(data, size, RGBA))

    def _header(self, image: InputFile) -> Header:
        # Reads a few chunks' lengths at most: no pixels, so cheap enough inline.
        return inspect_image(image.data, field="image", max_pixels=self._config.max_pixels)

    async def _decode(self, image_bytes: bytes, size: tuple[int, int]) -> DecodedImage:
        max_pixels = self._config.max_pixels
        return await off_loop(
            lambda: decode_image(image_bytes, field="image", max_pixels=max_pixels),
            size=decoded_bytes(image_bytes, size, RGB),
        )

    def _seed(self, params: common_pb2.GenerationParams) -> int:
        return params.seed if params.HasField("seed") else self._rng.randrange(2**32)

    def _check_output(self, width: int, height: int, fields: tuple[str, ...] = ("image",)) -> None:
        """Refuse a result over max_output_pixels, naming the ``fields`` that set its size."""
        limit = self._config.max_output_pixels
        if width * height > limit:
            raise InvalidArgument.on(
                fields,
                f"the result would be {width}x{height} = {width * height} pixels; "
                f"the limit is {limit}",
            )


SIDES = ("left", "right", "top", "bottom")
"""An outpaint's padding fields."""
SMALL_INPUT_BYTES = 32 * 1024
"""Work on this few bytes takes well under a millisecond: cheaper inline than a thread hop."""
MASK, RGB, RGBA = 1, 3, 4
"""Bytes per decoded pixel of a mask, and of an image without and with alpha."""


def decoded_bytes(data: bytes, size: tuple[int, int], bytes_per_pixel: int) -> int:
    """The :func:`off_loop` size of decoding ``data``, an image of ``size``: its
    decoded bytes, or its encoded ones if more. A mask, or a flat image, compresses to
    almost nothing, so the encoded size alone would decode a megapixel inline."""
    width, height = size
    return max(len(data), width * height * bytes_per_pixel)


def runs_inline(size: int) -> bool:
    """Whether :func:`off_loop` runs work of ``size`` bytes on the event loop itself."""
    return size <= SMALL_INPUT_BYTES


async def off_loop(work: Callable[[], T], *, size: int) -> T:
    """Run CPU ``work`` in a worker thread, unless ``size``, the bytes it reads or
    makes (:func:`decoded_bytes` for a decode), is small enough that the hop would cost
    more than the work (the event loop is blocked for well under 1 ms)."""
    if runs_inline(size):
        return work()
    return await asyncio.to_thread(work)


def _common(
    request: EditMessage,
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


def _sources(image: InputFile, decoded: DecodedImage) -> SourceFiles:
    if not decoded.upright:
        return SourceFiles(None)
    encoded = EncodedImage(image.data, CONTENT_TYPES[decoded.format])
    return SourceFiles(encoded, image_key=image.object_key)


def _prepared(
    edit: InspectedEdit, decoded: DecodedImage, sources: SourceFiles, spec: EditSpec
) -> PreparedEdit:
    return PreparedEdit(
        operation=edit.operation,
        route=edit.route,
        output_size=edit.output_size,
        output=edit.output,
        seed=edit.seed,
        image=decoded.pixels,
        sources=sources,
        spec=spec,
    )


def _scale(request: pb.EnhanceRequest) -> int:
    return request.scale if ENHANCE_KINDS[request.kind] is EnhanceKind.UPSCALE else 1


def _raise_if(violations: list[FieldViolation]) -> None:
    # A field that fails the generic check (an unknown enum value) fails the specific
    # one too ("kind is required"); the first, more precise, reason is the one to keep.
    first: dict[str, FieldViolation] = {}
    for violation in violations:
        first.setdefault(violation.field, violation)
    if first:
        raise InvalidArgument.of(list(first.values()))


def _padding(request: pb.OutpaintRequest) -> Padding:
    return Padding(request.left, request.right, request.top, request.bottom)


def _enhance_strength(request: pb.EnhanceRequest) -> float:
    return request.strength if request.HasField("strength") else DEFAULT_STRENGTH


def _output(options: common_pb2.OutputOptions) -> OutputSpec:
    return OutputSpec(
        format=FORMATS_FROM_PROTO.get(options.format, "PNG"),
        quality=options.quality or DEFAULT_QUALITY,
        inline=options.inline,
        previews=options.previews,
    )


def _route(
    operation: Operation,
    width: int,
    height: int,
    choice: common_pb2.ProviderChoice,
    *,
    mask_fraction: float | None = None,
    prompt: bool = False,
    output_fields: tuple[str, ...] = (),
) -> RouteRequest:
    return RouteRequest(
        operation,
        width,
        height,
        provider=choice.provider,
        model=choice.model,
        prefer=PREFERENCES.get(choice.prefer, "cost"),
        max_cost=choice.max_cost_credits if choice.HasField("max_cost_credits") else None,
        mask_fraction=mask_fraction,
        prompt=prompt,
        output_fields=output_fields,
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
