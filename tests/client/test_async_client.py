"""AsyncClient against a real server: edits, progress, results, uploads, jobs, errors."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest

from retouch.client import (
    Accepted,
    AsyncClient,
    Cancelled,
    Completed,
    ImageRef,
    InvalidArgument,
    JobState,
    NotFound,
    Operation,
    Progress,
    ProviderHealth,
    RetouchError,
    Unauthenticated,
)
from retouch.server.config import DEV_API_KEY, ServerConfig
from tests.client.fakes import Held, ScriptedEdits, Step, job_events
from tests.helpers import decode_png, photo, png, square_mask


async def test_an_edit_streams_typed_events_and_awaits_to_its_result(
    client: AsyncClient, photo_png: bytes, mask_png: bytes
) -> None:
    job = client.inpaint(photo_png, mask=mask_png, provider="opencv")
    events = [event async for event in job]
    result = await job

    assert isinstance(events[0], Accepted)
    assert isinstance(events[-1], Completed)
    assert all(isinstance(e, Progress) for e in events[1:-1])
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert {e.job_id for e in events} == {job.job_id}
    accepted = events[0]
    assert (accepted.provider, accepted.model) == ("opencv", "telea")
    assert accepted.routing.chosen == "opencv"
    assert (accepted.input_width, accepted.input_height) == (256, 256)
    assert result.result_id == events[-1].result_id
    assert (result.provider, result.model, result.seed) == ("opencv", "telea", accepted.seed)
    assert (result.image.width, result.image.height, result.image.format) == (256, 256, "png")
    assert result.data is None
    uuid.UUID(job.request_id)


async def test_awaiting_an_edit_reports_progress_to_the_callback(
    client: AsyncClient, photo_png: bytes, mask_png: bytes
) -> None:
    seen: list[Progress] = []

    result = await client.inpaint(photo_png, mask=mask_png, on_progress=seen.append)

    assert len(seen) >= 2
    assert [p.fraction for p in seen] == sorted(p.fraction for p in seen)
    assert {p.job_id for p in seen} == {result.job_id}


async def test_an_async_progress_callback_is_awaited(client: AsyncClient, photo_png: bytes) -> None:
    stages: list[str] = []

    async def record(progress: Progress) -> None:
        stages.append(progress.stage)

    await client.enhance(photo_png, sharpen=True, strength=0.3, on_progress=record)

    assert stages


async def test_a_result_saves_to_a_file_or_into_a_directory(
    client: AsyncClient, out_dir: Path
) -> None:
    original = photo()
    mask = square_mask((256, 256), (100, 100, 140, 140))

    result = await client.inpaint(png(original), mask=png(mask), provider="opencv")
    saved = await result.save(out_dir / "fixed.png")
    into_dir = await result.save(out_dir)

    saved_bytes = await asyncio.to_thread(saved.read_bytes)
    pixels = decode_png(saved_bytes)
    keep = mask == 0
    assert np.array_equal(pixels[keep], original[keep])
    assert into_dir == out_dir / f"{result.result_id}.png"
    assert await asyncio.to_thread(into_dir.read_bytes) == saved_bytes == await result.read()
    names = await asyncio.to_thread(lambda: sorted(p.name for p in out_dir.iterdir()))
    assert names == sorted(["fixed.png", into_dir.name])  # no .part file left behind


async def test_inline_results_carry_their_bytes_and_match_the_download(
    client: AsyncClient, photo_png: bytes
) -> None:
    result = await client.enhance(photo_png, upscale=2, format="jpeg", quality=80, inline=True)

    assert result.data is not None
    assert result.data.startswith(b"\xff\xd8\xff")
    assert result.image.content_type == "image/jpeg"
    assert (result.image.width, result.image.height) == (512, 512)
    chunks = [chunk async for chunk in client.download(result.result_id)]
    assert len(chunks) > 1  # the server sends 32 KiB chunks in these tests
    assert b"".join(chunks) == result.data


async def test_download_to_names_the_file_after_the_result_in_a_directory(
    client: AsyncClient, photo_png: bytes, out_dir: Path
) -> None:
    result = await client.enhance(photo_png, denoise=True, format="webp")

    path = await client.download_to(result.result_id, out_dir)

    assert path == out_dir / f"{result.result_id}.webp"
    assert path.read_bytes().startswith(b"RIFF")


async def test_inputs_are_paths_bytes_or_references_and_edits_chain_on_results(
    client: AsyncClient, photo_file: Path, mask_file: Path
) -> None:
    first = await client.inpaint(photo_file, mask=mask_file)
    bigger = await client.enhance(first, upscale=2)
    extended = await client.outpaint(ImageRef(result_id=bigger.result_id), left=16, bottom=8)

    assert (bigger.image.width, bigger.image.height) == (512, 512)
    assert (extended.image.width, extended.image.height) == (528, 520)


async def test_large_inputs_are_uploaded_in_chunks_first(
    target: str, config: ServerConfig, photo_file: Path, photo_png: bytes, mask_png: bytes
) -> None:
    uploads = config.data_dir / "objects" / "uploads"
    async with AsyncClient(
        target, api_key=DEV_API_KEY, upload_threshold=len(mask_png), chunk_size=16 * 1024
    ) as client:
        result = await client.inpaint(photo_file, mask=mask_png)
    stored = await asyncio.to_thread(
        lambda: [p.read_bytes() for p in uploads.rglob("*") if p.is_file()]
    )

    assert result.image.width == 256
    assert stored == [photo_png]  # the mask was small enough to send inline


async def test_an_upload_is_an_input(
    client: AsyncClient, photo_file: Path, photo_png: bytes, mask_png: bytes
) -> None:
    upload = await client.upload(photo_file)

    assert upload.size_bytes == len(photo_png)
    assert upload.sha256 == hashlib.sha256(photo_png).hexdigest()
    assert upload.expires_at is not None
    result = await client.inpaint(upload, mask=mask_png)
    assert result.image.width == 256


async def test_a_bad_mask_is_invalid_argument_naming_the_field(
    client: AsyncClient, photo_png: bytes
) -> None:
    small_mask = png(square_mask((100, 100), (10, 10, 20, 20)))

    with pytest.raises(InvalidArgument) as raised:
        await client.inpaint(photo_png, mask=small_mask)

    error = raised.value
    assert isinstance(error, RetouchError)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.field_violations] == ["mask"]
    assert "100x100" in error.field_violations[0].description
    assert error.message
    assert str(error).startswith("INVALID_ARGUMENT: ")
    assert error.retry_after is None


async def test_a_bad_key_is_unauthenticated_with_a_reason(target: str) -> None:
    async with AsyncClient(target, api_key="not-a-key") as client:
        with pytest.raises(Unauthenticated) as raised:
            await client.providers()

    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.reason == "INVALID_API_KEY"
    assert raised.value.domain == "retouch.v1"


async def test_a_missing_input_file_raises_before_anything_is_sent(
    client: AsyncClient, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        await client.inpaint(tmp_path / "missing.png")

    assert await client.list_jobs() == []


async def test_results_belong_to_their_subject(
    client: AsyncClient, photo_png: bytes, mask_png: bytes, tmp_path: Path
) -> None:
    result = await client.inpaint(photo_png, mask=mask_png)
    eve = client.with_subject("user:eve")

    with pytest.raises(NotFound):
        await eve.download_to(result.result_id, tmp_path / "stolen.png")
    with pytest.raises(NotFound):
        await eve.enhance(result, upscale=2)
    await eve.close()  # leaves the shared channel open
    assert (await client.get_job(result.job_id)).job_id == result.job_id
    assert not (tmp_path / "stolen.png").exists()


async def test_jobs_are_listed_newest_first_looked_up_and_filtered(
    client: AsyncClient, photo_png: bytes
) -> None:
    first = await client.enhance(photo_png, sharpen=True)
    second = await client.enhance(photo_png, denoise=True)

    listed = await client.list_jobs()
    one = await client.list_jobs(limit=1)
    failed = await client.list_jobs(state="failed")
    job = await client.get_job(first.job_id)

    assert [j.job_id for j in listed] == [second.job_id, first.job_id]
    assert [j.job_id for j in one] == [second.job_id]
    assert failed == []
    assert job.state is JobState.SUCCEEDED
    assert job.operation is Operation.ENHANCE
    assert job.result_id == first.result_id
    assert job.subject == "user:42"
    assert job.created_at is not None


async def test_watch_replays_a_finished_job_after_a_seq(
    client: AsyncClient, photo_png: bytes, mask_png: bytes
) -> None:
    original = client.inpaint(photo_png, mask=mask_png)
    events = [e async for e in original]
    assert original.job_id is not None

    replayed = [e async for e in client.watch(original.job_id)]
    later = client.watch(original.job_id, after_seq=1)
    result = await later

    assert replayed == events
    assert later.accepted is None
    assert result.result_id == events[-1].result_id  # type: ignore[union-attr]


async def test_cancelling_a_running_job_ends_its_stream_and_the_job(
    held: Held, photo_png: bytes, mask_png: bytes
) -> None:
    async with AsyncClient(held.target, api_key=DEV_API_KEY) as client:
        job = client.inpaint(photo_png, mask=mask_png)

        async def cancel_at_the_first_progress() -> None:
            async for event in job:
                if isinstance(event, Progress):
                    await job.cancel()

        with pytest.raises(Cancelled):
            await cancel_at_the_first_progress()
        assert job.job_id is not None
        stored = await client.get_job(job.job_id)

    assert stored.state is JobState.CANCELLED
    assert held.provider.cancelled == 1


async def test_a_job_cancelled_before_it_starts_sends_nothing() -> None:
    edits = ScriptedEdits([Step(events=job_events())])

    async with edits.serve() as fake, AsyncClient(fake, api_key="k") as client:
        job = client.inpaint(b"image")
        await job.cancel()
        with pytest.raises(Cancelled):
            await job

    assert job.cancelled()
    assert edits.requests == []


async def test_providers_describe_capabilities_and_health(client: AsyncClient) -> None:
    everyone = await client.providers()
    outpainters = await client.providers(operation=Operation.OUTPAINT)

    opencv = next(p for p in everyone if p.name == "opencv")
    assert set(opencv.operations) == {Operation.INPAINT, Operation.OUTPAINT, Operation.ENHANCE}
    assert opencv.models[0] == "telea"
    assert opencv.health is ProviderHealth.HEALTHY
    assert 2 in opencv.upscale_factors
    assert "opencv" in [p.name for p in outpainters]
    assert all(Operation.OUTPAINT in p.operations for p in outpainters)


async def test_enhance_needs_exactly_one_kind(client: AsyncClient) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        _ = client.enhance(b"")
    with pytest.raises(ValueError, match="exactly one"):
        _ = client.enhance(b"", upscale=2, denoise=True)
