"""Regressions found by probing the service from outside: each answered INTERNAL, a
traceback or an oversized status before."""

from __future__ import annotations

import io
import struct
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from retouch.server.app import RunningServer
from retouch.v1 import account_pb2, account_pb2_grpc, common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import bad_fields, metadata, photo, png, rpc_details

MAX_TRAILERS = 4096


def image(data: bytes) -> common_pb2.ImageInput:
    return common_pb2.ImageInput(data=data)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunks.append((data[pos + 4 : pos + 8], data[pos : pos + 12 + length]))
        pos += 12 + length
    return chunks


def palette_png(order: str) -> bytes:
    """A palette PNG whose PLTE chunk is missing (``"none"``) or after IDAT (``"late"``)."""
    pixels = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("P").save(buffer, format="PNG")
    chunks = _chunks(buffer.getvalue())
    by_kind = dict(chunks)
    body = [c for kind, c in chunks if kind not in (b"PLTE", b"IEND")]
    if order == "late":
        body.append(by_kind[b"PLTE"])
    return b"\x89PNG\r\n\x1a\n" + b"".join(body) + by_kind[b"IEND"]


def trailer_bytes(error: aio.AioRpcError) -> int:
    trailing = error.trailing_metadata() or ()
    size = len(error.details() or "")
    for key, value in trailing:
        size += len(key) + len(value)
    return size


async def _finish(call: Any) -> None:
    if hasattr(call, "__aiter__"):
        async for _ in call:
            pass
    else:
        await call


async def refused(call: object) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as error:
        await _finish(call)
    return error.value


@pytest.mark.parametrize("order", ["none", "late"])
@pytest.mark.parametrize("as_mask", [False, True])
async def test_palette_png_with_broken_chunk_order_is_invalid_argument(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, order: str, as_mask: bool
) -> None:
    broken = palette_png(order)
    good = png(photo((64, 64)))
    request = (
        pb.InpaintRequest(image=image(good), mask=image(broken))
        if as_mask
        else pb.InpaintRequest(image=image(broken), mask=image(good))
    )
    error = await refused(edit.Inpaint(request, metadata=metadata()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["mask" if as_mask else "image"]


LONG = "j" * 6000


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        ("GetJob", pb.GetJobRequest(job_id=LONG), "job_id"),
        ("CancelJob", pb.CancelJobRequest(job_id=LONG), "job_id"),
        ("WatchJob", pb.WatchJobRequest(job_id=LONG), "job_id"),
        ("DownloadResult", pb.DownloadResultRequest(result_id=LONG), "result_id"),
        ("ListJobs", pb.ListJobsRequest(page_token=LONG), "page_token"),
        (
            "Inpaint",
            pb.InpaintRequest(image=common_pb2.ImageInput(upload_id=LONG)),
            "image.upload_id",
        ),
        (
            "Enhance",
            pb.EnhanceRequest(
                image=common_pb2.ImageInput(result_id=LONG), kind=pb.ENHANCE_KIND_SHARPEN
            ),
            "image.result_id",
        ),
        (
            "Outpaint",
            pb.OutpaintRequest(
                left=8, provider=common_pb2.ProviderChoice(provider=LONG, model=LONG)
            ),
            "provider.provider",
        ),
    ],
)
async def test_over_long_ids_and_names_are_refused_in_a_small_status(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
    method: str,
    request_message: object,
    field: str,
) -> None:
    error = await refused(getattr(edit, method)(request_message, metadata=metadata()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_fields(error)
    assert LONG not in (error.details() or "")
    assert trailer_bytes(error) < MAX_TRAILERS


async def test_over_long_names_are_refused_by_account_calls(channel: aio.Channel) -> None:
    account = account_pb2_grpc.AccountStub(channel)
    calls = [
        (
            account.GetUsage(
                account_pb2.GetUsageRequest(subject="user:" + LONG), metadata=metadata()
            ),
            "subject",
        ),
        (
            account.SetPlan(
                account_pb2.SetPlanRequest(subject="user:1", plan=LONG), metadata=metadata()
            ),
            "plan",
        ),
        (
            account.GrantCredits(
                account_pb2.GrantCreditsRequest(subject="user:1", credits=1, request_id=LONG),
                metadata=metadata(),
            ),
            "request_id",
        ),
    ]
    for call, field in calls:
        error = await refused(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error) == [field]
        assert trailer_bytes(error) < MAX_TRAILERS


async def test_long_subject_header_is_refused_without_echoing_it(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
) -> None:
    error = await refused(
        edit.GetJob(pb.GetJobRequest(job_id="job_1"), metadata=metadata(subject="user:" + LONG))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert LONG not in (error.details() or "")
    assert trailer_bytes(error) < MAX_TRAILERS


async def test_watch_after_the_largest_seq_replays_nothing_and_ends_ok(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes, mask_png: bytes
) -> None:
    events = [
        e
        async for e in edit.Inpaint(
            pb.InpaintRequest(image=image(photo_png), mask=image(mask_png)), metadata=metadata()
        )
    ]
    job_id = events[0].job_id
    for after_seq in (2**63, 2**63 - 1, 2**64 - 1):
        watched = [
            e
            async for e in edit.WatchJob(
                pb.WatchJobRequest(job_id=job_id, after_seq=after_seq), metadata=metadata()
            )
        ]
        assert watched == []


async def test_grant_past_the_bound_is_refused_and_usage_keeps_working(
    channel: aio.Channel,
) -> None:
    account = account_pb2_grpc.AccountStub(channel)
    granted = await account.GrantCredits(
        account_pb2.GrantCreditsRequest(subject="user:rich", credits=2**53), metadata=metadata()
    )
    assert granted.credits_balance == 2**53
    for credits in (2**53 + 1, 2**63 - 1):
        error = await refused(
            account.GrantCredits(
                account_pb2.GrantCreditsRequest(subject="user:rich", credits=credits),
                metadata=metadata(),
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error) == ["credits"]
    usage = await account.GetUsage(
        account_pb2.GetUsageRequest(subject="user:rich"), metadata=metadata()
    )
    assert usage.credits_balance == 2**53


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (
            pb.InpaintRequest(provider=common_pb2.ProviderChoice(prefer=99)),  # type: ignore[arg-type]
            "provider.prefer",
        ),
        (
            pb.InpaintRequest(output=common_pb2.OutputOptions(format=42)),  # type: ignore[arg-type]
            "output.format",
        ),
        (pb.EnhanceRequest(kind=7), "kind"),  # type: ignore[arg-type]
    ],
)
async def test_unknown_enum_values_are_refused_naming_the_field(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
    photo_png: bytes,
    request_message: pb.InpaintRequest | pb.EnhanceRequest,
    field: str,
) -> None:
    request_message.image.data = photo_png
    method = edit.Inpaint if isinstance(request_message, pb.InpaintRequest) else edit.Enhance
    error = await refused(method(request_message, metadata=metadata()))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_fields(error)


async def test_unknown_job_state_filter_is_refused(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
) -> None:
    error = await refused(
        edit.ListJobs(pb.ListJobsRequest(state=12), metadata=metadata())  # type: ignore[arg-type]
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["state"]


async def test_quote_refuses_an_unknown_route_preference(channel: aio.Channel) -> None:
    account = account_pb2_grpc.AccountStub(channel)
    quote = account_pb2.QuoteRequest(
        enhance=pb.EnhanceRequest(
            kind=pb.ENHANCE_KIND_SHARPEN,
            provider=common_pb2.ProviderChoice(prefer=5),  # type: ignore[arg-type]
        )
    )
    error = await refused(account.Quote(quote, metadata=metadata()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["enhance.provider.prefer"]
    details = rpc_details(error)
    assert isinstance(details[0], error_details_pb2.BadRequest)


async def test_health_list_names_every_service(server: RunningServer, channel: aio.Channel) -> None:
    # The typeshed stubs predate List; the installed modules have it.
    health: Any = health_pb2_grpc.HealthStub(channel)
    messages: Any = health_pb2
    listed = await health.List(messages.HealthListRequest())
    serving = health_pb2.HealthCheckResponse.SERVING
    assert {
        "",
        "retouch.v1.ImageEdit",
        "retouch.v1.Providers",
        "retouch.v1.Account",
    } <= set(listed.statuses)
    assert all(s.status == serving for s in listed.statuses.values())


@pytest.mark.parametrize(
    ("kind", "scale", "model"),
    [
        (pb.ENHANCE_KIND_UPSCALE, 2, "lanczos4+unsharp"),
        (pb.ENHANCE_KIND_DENOISE, 0, "fast-nl-means"),
        (pb.ENHANCE_KIND_SHARPEN, 0, "unsharp-mask"),
    ],
)
async def test_enhance_reports_the_model_it_runs(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, kind: int, scale: int, model: str
) -> None:
    request = pb.EnhanceRequest(
        image=image(png(photo((64, 64)))),
        kind=kind,  # type: ignore[arg-type]
        scale=scale,
        provider=common_pb2.ProviderChoice(provider="opencv"),
    )
    events = [e async for e in edit.Enhance(request, metadata=metadata())]
    assert events[0].accepted.model == model
    job = await edit.GetJob(pb.GetJobRequest(job_id=events[0].job_id), metadata=metadata())
    assert job.model == model
    listed = await edit.ListJobs(pb.ListJobsRequest(), metadata=metadata())
    assert [j.model for j in listed.jobs if j.job_id == job.job_id] == [model]


async def test_enhance_refuses_an_inpainting_model(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub,
) -> None:
    request = pb.EnhanceRequest(
        image=image(png(photo((64, 64)))),
        kind=pb.ENHANCE_KIND_SHARPEN,
        provider=common_pb2.ProviderChoice(provider="opencv", model="telea"),
    )
    error = await refused(edit.Enhance(request, metadata=metadata()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["provider.model"]


def test_statuses_stay_small_whatever_they_carry() -> None:
    from retouch.server.errors import (
        MAX_STATUS_BYTES,
        FieldViolation,
        InvalidArgument,
        Unauthenticated,
    )

    huge = "x" * 100_000
    many = InvalidArgument.of([FieldViolation(f"f{i}", huge) for i in range(50)])
    assert many.to_status_proto().ByteSize() <= MAX_STATUS_BYTES
    info = Unauthenticated(huge, reason=huge, metadata={"k": huge})
    status = info.to_status_proto()
    assert status.ByteSize() <= MAX_STATUS_BYTES
    assert status.message.endswith("…")
    unpacked = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(unpacked)
    assert unpacked.metadata["k"].endswith("…")
    assert len(many.to_status_proto().details) == 1


def test_refused_png_decodes_do_not_raise_anything_else() -> None:
    from retouch.server.errors import InvalidArgument
    from retouch.server.imaging import decode_image

    corrupted = bytearray(palette_png("late"))
    corrupted[40] ^= 0xFF
    for data in (palette_png("none"), palette_png("late"), bytes(corrupted)):
        with pytest.raises(InvalidArgument):
            decode_image(data, field="image", max_pixels=1 << 24)
