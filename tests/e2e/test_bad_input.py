"""Bad input gets INVALID_ARGUMENT with a BadRequest naming the field; nothing runs."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from grpc import aio
from numpy.typing import NDArray
from PIL import Image

from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import bad_fields, metadata, photo, png, square_mask


def image(data: bytes) -> common_pb2.ImageInput:
    return common_pb2.ImageInput(data=data)


async def refused(call: aio.UnaryStreamCall) -> aio.AioRpcError:  # type: ignore[type-arg]
    with pytest.raises(aio.AioRpcError) as error:
        async for _ in call:
            pass
    return error.value


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo((32, 32))).save(buffer, format="GIF")
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A tiny PNG whose header claims 60000 x 60000 pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"", "image.data"),
        (b"not an image at all", "image"),
        (gif(), "image"),
        (png(photo())[:500], "image"),
        (bomb_png(), "image"),
    ],
    ids=["empty", "garbage", "gif", "truncated", "bomb"],
)
async def test_bad_images_are_refused(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, mask_png: bytes, data: bytes, field: str
) -> None:
    error = await refused(
        edit.Inpaint(
            pb.InpaintRequest(image=image(data), mask=image(mask_png)), metadata=metadata()
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == [field]
    assert error.details()
    assert "Traceback" not in (error.details() or "")


async def test_a_mask_of_another_size_is_refused_not_resized(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes
) -> None:
    small_mask = png(square_mask((128, 128), (10, 10, 20, 20)))
    error = await refused(
        edit.Inpaint(
            pb.InpaintRequest(image=image(photo_png), mask=image(small_mask)), metadata=metadata()
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["mask"]
    assert "128" in (error.details() or "")
    assert "256" in (error.details() or "")


async def test_an_empty_mask_is_refused(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes
) -> None:
    empty = png(np.zeros((256, 256), np.uint8))
    error = await refused(
        edit.Inpaint(
            pb.InpaintRequest(image=image(photo_png), mask=image(empty)), metadata=metadata()
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["mask"]


async def test_an_opaque_image_without_a_mask_is_refused(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes
) -> None:
    error = await refused(
        edit.Inpaint(pb.InpaintRequest(image=image(photo_png)), metadata=metadata())
    )
    assert bad_fields(error) == ["mask"]


async def test_a_missing_image_is_refused(edit: image_edit_pb2_grpc.ImageEditAsyncStub) -> None:
    error = await refused(edit.Inpaint(pb.InpaintRequest(), metadata=metadata()))
    assert bad_fields(error) == ["image"]


async def test_every_bad_parameter_is_reported_at_once(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes, mask_png: bytes
) -> None:
    error = await refused(
        edit.Inpaint(
            pb.InpaintRequest(
                request_id="x" * 200,
                image=image(photo_png),
                mask=image(mask_png),
                mask_options=pb.MaskOptions(grow_px=1000),
                params=common_pb2.GenerationParams(strength=2.0, steps=0),
                output=common_pb2.OutputOptions(quality=101),
            ),
            metadata=metadata(),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(bad_fields(error)) == [
        "mask_options.grow_px",
        "output.quality",
        "params.steps",
        "params.strength",
        "request_id",
    ]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.EnhanceRequest(kind=pb.ENHANCE_KIND_UPSCALE, scale=3), "scale"),
        (pb.EnhanceRequest(), "kind"),
        (pb.EnhanceRequest(kind=pb.ENHANCE_KIND_DENOISE, strength=1.5), "strength"),
    ],
)
async def test_bad_enhance_parameters_are_refused(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
    photo_png: bytes,
    request_: pb.EnhanceRequest,
    field: str,
) -> None:
    request_.image.data = photo_png
    error = await refused(edit.Enhance(request_, metadata=metadata()))
    assert bad_fields(error) == [field]


async def test_outpaint_needs_a_side(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes
) -> None:
    error = await refused(
        edit.Outpaint(pb.OutpaintRequest(image=image(photo_png)), metadata=metadata())
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["left"]


async def test_unknown_providers_and_models_are_refused(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes, mask_png: bytes
) -> None:
    unknown_provider = await refused(
        edit.Inpaint(
            pb.InpaintRequest(
                image=image(photo_png),
                mask=image(mask_png),
                provider=common_pb2.ProviderChoice(provider="nope"),
            ),
            metadata=metadata(),
        )
    )
    assert bad_fields(unknown_provider) == ["provider.provider"]
    unknown_model = await refused(
        edit.Inpaint(
            pb.InpaintRequest(
                image=image(photo_png),
                mask=image(mask_png),
                provider=common_pb2.ProviderChoice(provider="opencv", model="dall-e"),
            ),
            metadata=metadata(),
        )
    )
    assert bad_fields(unknown_model) == ["provider.model"]


async def test_a_bad_subject_is_refused(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes, mask_png: bytes
) -> None:
    error = await refused(
        edit.Inpaint(
            pb.InpaintRequest(image=image(photo_png), mask=image(mask_png)),
            metadata=metadata(subject="admin"),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["x-retouch-subject"]


def jpeg(pixels: NDArray[np.uint8], *, progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


def cut_in_half(data: bytes) -> bytes:
    """The first half of the file with an end-of-image marker put back: libjpeg only
    warns about the missing scan data and fills the rest of the picture with grey."""
    return data[: len(data) // 2] + b"\xff\xd9"


def frame_taller_than_data(data: bytes) -> bytes:
    """The start-of-frame header claims more rows than the scan data holds."""
    import struct

    frame = data.index(b"\xff\xc0")
    height, width = struct.unpack_from(">HH", data, frame + 5)
    return data[: frame + 5] + struct.pack(">HH", height + 72, width) + data[frame + 9 :]


def noise_in_scan(data: bytes) -> bytes:
    scan = data.index(b"\xff\xda")
    noise = np.random.default_rng(7).integers(0, 256, 400, dtype=np.uint8).tobytes()
    start = scan + 300
    return data[:start] + noise + data[start + len(noise) :]


DAMAGES = [cut_in_half, frame_taller_than_data, noise_in_scan]
DAMAGE_IDS = ["truncated", "frame-taller-than-data", "noise-in-scan"]


async def events_until_refused(
    call: aio.UnaryStreamCall,  # type: ignore[type-arg]
) -> tuple[list[object], aio.AioRpcError]:
    """The events a call sent before it failed, and how it failed."""
    events: list[object] = []
    try:
        async for event in call:
            events.append(event)
    except aio.AioRpcError as error:
        return events, error
    raise AssertionError(f"the call succeeded after {len(events)} events")


@pytest.mark.parametrize("damage", DAMAGES, ids=DAMAGE_IDS)
async def test_a_damaged_jpeg_image_is_refused_before_the_job_starts(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, damage: object
) -> None:
    assert callable(damage)
    request = pb.EnhanceRequest(image=image(damage(jpeg(photo()))), kind=pb.ENHANCE_KIND_SHARPEN)
    events, error = await events_until_refused(edit.Enhance(request, metadata=metadata()))
    assert events == []
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["image"]
    assert "the JPEG data is truncated or corrupt" in (error.details() or "")


@pytest.mark.parametrize("damage", DAMAGES, ids=DAMAGE_IDS)
async def test_a_damaged_jpeg_mask_is_refused_before_the_job_starts(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, damage: object
) -> None:
    assert callable(damage)
    mask = damage(jpeg(np.dstack([square_mask((256, 256), (64, 64, 192, 192))] * 3)))
    with Image.open(io.BytesIO(mask)) as declared:
        size = declared.size  # the size check passes, so the scan itself is judged
    request = pb.InpaintRequest(image=image(png(photo(size))), mask=image(mask))
    events, error = await events_until_refused(edit.Inpaint(request, metadata=metadata()))
    assert events == []
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["mask"]
    assert "the JPEG data is truncated or corrupt" in (error.details() or "")


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
async def test_a_whole_jpeg_photo_is_accepted(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, progressive: bool
) -> None:
    request = pb.EnhanceRequest(
        image=image(jpeg(photo(), progressive=progressive)), kind=pb.ENHANCE_KIND_SHARPEN
    )
    events = [event async for event in edit.Enhance(request, metadata=metadata())]
    assert events[-1].WhichOneof("event") == "completed"


async def test_an_unknown_enhance_kind_is_reported_once(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes
) -> None:
    request = pb.EnhanceRequest(image=image(photo_png), kind=99)  # type: ignore[arg-type]
    error = await refused(edit.Enhance(request, metadata=metadata()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["kind"]
    assert "kind = 99 is not a known value" in (error.details() or "")
