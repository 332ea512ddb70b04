"""Jobs, results and uploads belong to a tenant and subject; others get NOT_FOUND."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc import aio

from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.conftest import OTHER_KEY
from tests.helpers import metadata

if TYPE_CHECKING:
    Stub = image_edit_pb2_grpc.ImageEditAsyncStub

STRANGERS = [
    pytest.param({"key": OTHER_KEY}, id="other-tenant"),
    pytest.param({"subject": "user:mallory"}, id="other-subject"),
]


async def finished_job(edit: Stub, photo_png: bytes, mask_png: bytes) -> list[pb.JobEvent]:
    return [
        e
        async for e in edit.Inpaint(
            pb.InpaintRequest(
                image=common_pb2.ImageInput(data=photo_png),
                mask=common_pb2.ImageInput(data=mask_png),
            ),
            metadata=metadata(subject="user:alice"),
        )
    ]


async def outcome(call: object) -> None:
    if hasattr(call, "__aiter__"):
        async for _ in call:
            pass
    else:
        await call  # type: ignore[misc]


async def not_found(call: object) -> None:
    with pytest.raises(aio.AioRpcError) as error:
        await outcome(call)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("stranger", STRANGERS)
async def test_strangers_cannot_see_a_job_or_its_result(
    edit: Stub, photo_png: bytes, mask_png: bytes, stranger: dict[str, str]
) -> None:
    events = await finished_job(edit, photo_png, mask_png)
    job_id, result_id = events[0].job_id, events[-1].completed.result_id
    other = metadata(**stranger)
    await not_found(edit.GetJob(pb.GetJobRequest(job_id=job_id), metadata=other))
    await not_found(edit.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=other))
    await not_found(edit.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=other))
    await not_found(
        edit.DownloadResult(pb.DownloadResultRequest(result_id=result_id), metadata=other)
    )
    await not_found(
        edit.Enhance(
            pb.EnhanceRequest(
                image=common_pb2.ImageInput(result_id=result_id),
                kind=pb.ENHANCE_KIND_SHARPEN,
            ),
            metadata=other,
        )
    )
    listed = await edit.ListJobs(pb.ListJobsRequest(), metadata=other)
    assert list(listed.jobs) == []


async def test_the_owner_downloads_in_chunks(
    edit: Stub, photo_png: bytes, mask_png: bytes, server: object
) -> None:
    events = await finished_job(edit, photo_png, mask_png)
    chunks = [
        c
        async for c in edit.DownloadResult(
            pb.DownloadResultRequest(result_id=events[-1].completed.result_id),
            metadata=metadata(subject="user:alice"),
        )
    ]
    assert chunks[0].content_type == "image/png"
    assert chunks[0].total_size == sum(len(c.data) for c in chunks)
    assert chunks[0].total_size == events[-1].completed.image.size_bytes


async def test_unknown_ids_are_not_found(edit: Stub) -> None:
    await not_found(edit.GetJob(pb.GetJobRequest(job_id="job_nope"), metadata=metadata()))
    await not_found(edit.GetJob(pb.GetJobRequest(), metadata=metadata()))
    await not_found(
        edit.DownloadResult(pb.DownloadResultRequest(result_id="res_nope"), metadata=metadata())
    )


async def test_concurrent_callers_each_own_their_job(
    slow_edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    subjects = [f"user:u{i}" for i in range(8)]

    async def run_as(subject: str) -> str:
        request = pb.InpaintRequest(
            image=common_pb2.ImageInput(data=photo_png), mask=common_pb2.ImageInput(data=mask_png)
        )
        events = [e async for e in slow_edit.Inpaint(request, metadata=metadata(subject=subject))]
        return events[0].job_id

    job_ids = await asyncio.gather(*(run_as(subject) for subject in subjects))
    for subject, job_id in zip(subjects, job_ids, strict=True):
        job = await slow_edit.GetJob(
            pb.GetJobRequest(job_id=job_id), metadata=metadata(subject=subject)
        )
        assert job.subject == subject
