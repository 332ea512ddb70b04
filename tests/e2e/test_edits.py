"""Inpaint, outpaint and enhance a real photo over gRPC, with streamed progress."""

from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import pytest
from grpc import aio

from retouch.server.app import running
from retouch.server.config import ServerConfig
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import decode_png, metadata, photo, png, square_mask


async def run(call: aio.UnaryStreamCall) -> list[pb.JobEvent]:  # type: ignore[type-arg]
    return [event async for event in call]


def image(data: bytes) -> common_pb2.ImageInput:
    return common_pb2.ImageInput(data=data)


async def download(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, result_id: str, **kw: object
) -> bytes:
    chunks = [
        c
        async for c in edit.DownloadResult(
            pb.DownloadResultRequest(result_id=result_id),
            metadata=metadata(**kw),  # type: ignore[arg-type]
        )
    ]
    return b"".join(c.data for c in chunks)


async def test_inpaint_streams_accepted_progress_completed(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes, mask_png: bytes
) -> None:
    events = await run(
        edit.Inpaint(
            pb.InpaintRequest(image=image(photo_png), mask=image(mask_png)), metadata=metadata()
        )
    )

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "accepted"
    assert kinds[-1] == "completed"
    assert set(kinds[1:-1]) == {"progress"}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.job_id for e in events}) == 1
    fractions = [e.progress.fraction for e in events if e.HasField("progress")]
    assert fractions == sorted(fractions)
    assert len(fractions) >= 2
    accepted = events[0].accepted
    assert accepted.provider == "opencv"
    assert accepted.model == "telea"
    assert (accepted.input_width, accepted.input_height) == (256, 256)
    completed = events[-1].completed
    assert (completed.image.width, completed.image.height) == (256, 256)
    assert completed.image.content_type == "image/png"
    assert completed.seed == accepted.seed
    assert completed.data == b""


@pytest.mark.parametrize("seed", [2**63, 2**64 - 1])
async def test_a_seed_past_the_signed_64_bit_range_is_reported_back_unchanged(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes, mask_png: bytes, seed: int
) -> None:
    request = pb.InpaintRequest(
        image=image(photo_png),
        mask=image(mask_png),
        params=common_pb2.GenerationParams(seed=seed),
    )
    events = await run(edit.Inpaint(request, metadata=metadata()))

    assert events[0].accepted.seed == seed
    assert events[-1].completed.seed == seed
    job = await edit.GetJob(pb.GetJobRequest(job_id=events[0].job_id), metadata=metadata())
    assert (job.state, job.seed) == (pb.JOB_STATE_SUCCEEDED, seed)
    listed = await edit.ListJobs(pb.ListJobsRequest(), metadata=metadata())
    assert [j.seed for j in listed.jobs] == [seed]


@pytest.mark.parametrize(
    ("side", "stages"),
    [
        # Inpainted and encoded on the event loop, each in well under a millisecond: the
        # stages in between are over before a stream could send them.
        (64, ["queued", "compositing"]),
        (256, ["queued", "preparing", "inpainting", "compositing", "encode"]),
    ],
)
async def test_a_stream_hears_the_stages_it_could_have_waited_for(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, side: int, stages: list[str]
) -> None:
    size = (side, side)
    hole = (side * 3 // 8, side * 3 // 8, side * 5 // 8, side * 5 // 8)
    request = pb.InpaintRequest(
        image=image(png(photo(size))), mask=image(png(square_mask(size, hole)))
    )
    events = await run(edit.Inpaint(request, metadata=metadata()))

    assert [e.progress.stage for e in events if e.HasField("progress")] == stages
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].HasField("completed")


async def test_inpaint_keeps_unmasked_pixels_and_fills_the_hole(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
) -> None:
    original = photo()
    mask = square_mask((256, 256), (100, 100, 140, 140))
    hole = mask == 255
    damaged = original.copy()
    damaged[hole] = (255, 0, 255)

    events = await run(
        edit.Inpaint(
            pb.InpaintRequest(
                image=image(png(damaged)),
                mask=image(png(mask)),
                output=common_pb2.OutputOptions(inline=True),
            ),
            metadata=metadata(),
        )
    )

    result = decode_png(events[-1].completed.data)
    assert np.array_equal(result[~hole], damaged[~hole])
    error_before = np.abs(damaged[hole].astype(int) - original[hole]).mean()
    error_after = np.abs(result[hole].astype(int) - original[hole]).mean()
    assert error_after < error_before / 3
    stored = await download(edit, events[-1].completed.result_id)
    assert stored == events[-1].completed.data


SEND_LIMIT = 64 * 1024


async def test_an_inline_result_past_the_send_limit_completes_without_its_bytes(
    config: ServerConfig, photo_png: bytes, mask_png: bytes
) -> None:
    small = dataclasses.replace(
        config, max_send_message_bytes=SEND_LIMIT, download_chunk_bytes=SEND_LIMIT // 4
    )
    small_png = png(photo((64, 64)))
    small_mask = png(square_mask((64, 64), (24, 24, 40, 40)))
    async with running(small) as server, aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        edit = image_edit_pb2_grpc.ImageEditStub(ch)
        inline = common_pb2.OutputOptions(inline=True)
        large = pb.InpaintRequest(image=image(photo_png), mask=image(mask_png), output=inline)
        events = await run(edit.Inpaint(large, metadata=metadata()))
        fits = pb.InpaintRequest(image=image(small_png), mask=image(small_mask), output=inline)
        fitting = (await run(edit.Inpaint(fits, metadata=metadata())))[-1].completed

        completed = events[-1].completed
        assert completed.data == b""
        stored = await download(edit, completed.result_id)
        assert len(stored) > SEND_LIMIT
        assert decode_png(stored).shape == (256, 256, 3)
        assert fitting.data
        assert fitting.data == await download(edit, fitting.result_id)


@pytest.mark.parametrize(
    ("fmt", "content_type", "magic"),
    [
        (common_pb2.IMAGE_FORMAT_PNG, "image/png", b"\x89PNG"),
        (common_pb2.IMAGE_FORMAT_JPEG, "image/jpeg", b"\xff\xd8\xff"),
        (common_pb2.IMAGE_FORMAT_WEBP, "image/webp", b"RIFF"),
    ],
)
async def test_results_come_in_the_requested_format(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
    photo_png: bytes,
    mask_png: bytes,
    fmt: common_pb2.ImageFormat.ValueType,
    content_type: str,
    magic: bytes,
) -> None:
    events = await run(
        edit.Inpaint(
            pb.InpaintRequest(
                image=image(photo_png),
                mask=image(mask_png),
                output=common_pb2.OutputOptions(format=fmt, quality=80, inline=True),
            ),
            metadata=metadata(),
        )
    )
    completed = events[-1].completed
    assert completed.image.content_type == content_type
    assert completed.data.startswith(magic)
    assert completed.image.size_bytes == len(completed.data)


async def test_transparent_pixels_are_the_mask_when_none_is_sent(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
) -> None:
    rgba = np.dstack([photo(), np.full((256, 256), 255, np.uint8)])
    rgba[50:80, 50:80, 3] = 0
    import cv2

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    assert ok
    events = await run(
        edit.Inpaint(
            pb.InpaintRequest(
                image=image(encoded.tobytes()), output=common_pb2.OutputOptions(inline=True)
            ),
            metadata=metadata(),
        )
    )
    result = decode_png(events[-1].completed.data)
    untouched = np.ones((256, 256), bool)
    untouched[50:80, 50:80] = False
    assert np.array_equal(result[untouched], photo()[untouched])


async def test_outpaint_extends_each_side_and_keeps_the_original(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes
) -> None:
    events = await run(
        edit.Outpaint(
            pb.OutpaintRequest(
                image=image(photo_png),
                left=16,
                right=32,
                top=8,
                bottom=0,
                output=common_pb2.OutputOptions(inline=True),
            ),
            metadata=metadata(),
        )
    )
    completed = events[-1].completed
    assert (completed.image.width, completed.image.height) == (256 + 48, 256 + 8)
    result = decode_png(completed.data)
    assert np.array_equal(result[8 : 8 + 256, 16 : 16 + 256], photo())


@pytest.mark.parametrize("scale", [2, 4])
async def test_upscale_multiplies_the_size(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, scale: int
) -> None:
    small = png(photo((64, 48)))
    events = await run(
        edit.Enhance(
            pb.EnhanceRequest(image=image(small), kind=pb.ENHANCE_KIND_UPSCALE, scale=scale),
            metadata=metadata(),
        )
    )
    completed = events[-1].completed
    assert (completed.image.width, completed.image.height) == (64 * scale, 48 * scale)


@pytest.mark.parametrize("kind", [pb.ENHANCE_KIND_DENOISE, pb.ENHANCE_KIND_SHARPEN])
async def test_denoise_and_sharpen_keep_the_size_and_change_pixels(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, kind: pb.EnhanceKind.ValueType
) -> None:
    rng = np.random.default_rng(7)
    noisy = np.clip(photo((96, 96)).astype(int) + rng.normal(0, 20, (96, 96, 3)), 0, 255)
    source = noisy.astype(np.uint8)
    events = await run(
        edit.Enhance(
            pb.EnhanceRequest(
                image=image(png(source)),
                kind=kind,
                strength=0.8,
                output=common_pb2.OutputOptions(inline=True),
            ),
            metadata=metadata(),
        )
    )
    result = decode_png(events[-1].completed.data)
    assert result.shape == source.shape
    assert not np.array_equal(result, source)


async def test_edits_chain_on_a_previous_result(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes, mask_png: bytes
) -> None:
    first = await run(
        edit.Inpaint(
            pb.InpaintRequest(image=image(photo_png), mask=image(mask_png)), metadata=metadata()
        )
    )
    second = await run(
        edit.Enhance(
            pb.EnhanceRequest(
                image=common_pb2.ImageInput(result_id=first[-1].completed.result_id),
                kind=pb.ENHANCE_KIND_UPSCALE,
                scale=2,
            ),
            metadata=metadata(),
        )
    )
    assert second[-1].completed.image.width == 512


async def test_a_named_model_is_used(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes, mask_png: bytes
) -> None:
    events = await run(
        edit.Inpaint(
            pb.InpaintRequest(
                image=image(photo_png),
                mask=image(mask_png),
                provider=common_pb2.ProviderChoice(provider="opencv", model="ns"),
            ),
            metadata=metadata(),
        )
    )
    assert events[0].accepted.model == "ns"


async def test_unauthenticated_calls_are_refused(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes, mask_png: bytes
) -> None:
    with pytest.raises(aio.AioRpcError) as refused:
        await run(edit.Inpaint(pb.InpaintRequest(image=image(photo_png), mask=image(mask_png))))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
