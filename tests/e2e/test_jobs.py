"""Jobs after the fact: GetJob, ListJobs, WatchJob, CancelJob, idempotency, deadlines."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc import aio

from retouch.server.app import RunningServer
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import bad_fields, metadata, read_all, read_one

if TYPE_CHECKING:
    Stub = image_edit_pb2_grpc.ImageEditAsyncStub


def inpaint(photo_png: bytes, mask_png: bytes, **fields: object) -> pb.InpaintRequest:
    return pb.InpaintRequest(
        image=common_pb2.ImageInput(data=photo_png),
        mask=common_pb2.ImageInput(data=mask_png),
        **fields,  # type: ignore[arg-type]
    )


async def test_get_job_reports_a_finished_job(
    edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    events = await read_all(
        edit.Inpaint(inpaint(photo_png, mask_png, request_id="r-1"), metadata=metadata())
    )
    job = await edit.GetJob(pb.GetJobRequest(job_id=events[0].job_id), metadata=metadata())
    assert job.state == pb.JOB_STATE_SUCCEEDED
    assert job.request_id == "r-1"
    assert job.operation == common_pb2.OPERATION_INPAINT
    assert job.provider == "opencv"
    assert job.result_id == events[-1].completed.result_id
    assert job.result.width == 256
    assert job.last_seq == events[-1].seq
    assert job.subject == "service"


async def test_list_jobs_pages_newest_first(edit: Stub, photo_png: bytes, mask_png: bytes) -> None:
    ids = []
    for _ in range(3):
        events = await read_all(edit.Inpaint(inpaint(photo_png, mask_png), metadata=metadata()))
        ids.append(events[0].job_id)
    first = await edit.ListJobs(pb.ListJobsRequest(page_size=2), metadata=metadata())
    assert [j.job_id for j in first.jobs] == ids[::-1][:2]
    assert first.next_page_token
    second = await edit.ListJobs(
        pb.ListJobsRequest(page_size=2, page_token=first.next_page_token), metadata=metadata()
    )
    assert [j.job_id for j in second.jobs] == ids[:1]
    assert second.next_page_token == ""
    failed = await edit.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_FAILED), metadata=metadata())
    assert list(failed.jobs) == []


@pytest.mark.parametrize(
    "page_token",
    ["../../etc/passwd", "job_\x00", "jöb_ünicode", "job_" + "0" * 28, "job_" + "F" * 28],
)
async def test_list_jobs_refuses_a_page_token_it_did_not_issue(edit: Stub, page_token: str) -> None:
    with pytest.raises(aio.AioRpcError) as refused:
        await edit.ListJobs(pb.ListJobsRequest(page_token=page_token), metadata=metadata())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == ["page_token"]


async def test_another_callers_page_token_is_refused_like_a_made_up_one(
    edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    for _ in range(2):
        await read_all(edit.Inpaint(inpaint(photo_png, mask_png), metadata=metadata()))
    first = await edit.ListJobs(pb.ListJobsRequest(page_size=1), metadata=metadata())
    refusals = []
    for page_token in (first.next_page_token, "job_" + "0" * 28):
        with pytest.raises(aio.AioRpcError) as refused:
            await edit.ListJobs(
                pb.ListJobsRequest(page_token=page_token), metadata=metadata(subject="user:eve")
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        refusals.append(refused.value.details())
    assert refusals[0] == refusals[1]


async def test_watch_replays_a_finished_job_after_a_seq(
    edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    events = await read_all(edit.Inpaint(inpaint(photo_png, mask_png), metadata=metadata()))
    replay = await read_all(
        edit.WatchJob(pb.WatchJobRequest(job_id=events[0].job_id, after_seq=1), metadata=metadata())
    )
    assert [e.seq for e in replay] == [e.seq for e in events[1:]]
    assert replay[-1].completed.result_id == events[-1].completed.result_id


async def test_watch_reattaches_to_a_running_job(
    slow_edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    call = slow_edit.Inpaint(inpaint(photo_png, mask_png), metadata=metadata())
    seen = [await read_one(call) for _ in range(3)]
    watched = await read_all(
        slow_edit.WatchJob(
            pb.WatchJobRequest(job_id=seen[0].job_id, after_seq=2), metadata=metadata()
        )
    )
    assert watched[0].seq == 3
    assert watched[-1].HasField("completed")
    rest = await read_all(call)
    assert rest[-1].completed.result_id == watched[-1].completed.result_id


async def test_cancel_job_stops_a_running_job(
    slow_edit: Stub, slow_server: RunningServer, photo_png: bytes, mask_png: bytes
) -> None:
    call = slow_edit.Inpaint(inpaint(photo_png, mask_png), metadata=metadata())
    first = await read_one(call)
    job = await slow_edit.CancelJob(pb.CancelJobRequest(job_id=first.job_id), metadata=metadata())
    assert job.state == pb.JOB_STATE_CANCELLED
    assert job.error_code == "CANCELLED"
    with pytest.raises(aio.AioRpcError) as ended:
        await read_all(call)
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    watched = slow_edit.WatchJob(pb.WatchJobRequest(job_id=first.job_id), metadata=metadata())
    with pytest.raises(aio.AioRpcError) as replayed:
        await read_all(watched)
    assert replayed.value.code() == grpc.StatusCode.CANCELLED


async def test_a_deadline_ends_the_job_as_deadline_exceeded(
    slow_edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    call = slow_edit.Inpaint(inpaint(photo_png, mask_png), metadata=metadata(), timeout=0.5)
    first = await read_one(call)
    with pytest.raises(aio.AioRpcError) as ended:
        await read_all(call)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    watched = slow_edit.WatchJob(pb.WatchJobRequest(job_id=first.job_id), metadata=metadata())
    with pytest.raises(aio.AioRpcError) as replayed:
        await read_all(watched)
    assert replayed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    job = await slow_edit.GetJob(pb.GetJobRequest(job_id=first.job_id), metadata=metadata())
    assert job.state == pb.JOB_STATE_CANCELLED
    assert job.error_code == "DEADLINE_EXCEEDED"


async def test_a_repeated_request_id_returns_the_same_job(
    edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    request = inpaint(photo_png, mask_png, request_id="same")
    first = await read_all(edit.Inpaint(request, metadata=metadata()))
    again = await read_all(edit.Inpaint(request, metadata=metadata()))
    assert again == first
    listed = await edit.ListJobs(pb.ListJobsRequest(), metadata=metadata())
    assert len(listed.jobs) == 1


async def test_concurrent_duplicates_make_one_job(
    slow_edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    request = inpaint(photo_png, mask_png, request_id="twice")
    results = await asyncio.gather(
        *(read_all(slow_edit.Inpaint(request, metadata=metadata())) for _ in range(5))
    )
    assert len({events[0].job_id for events in results}) == 1
    assert len({events[-1].completed.result_id for events in results}) == 1
    listed = await slow_edit.ListJobs(pb.ListJobsRequest(), metadata=metadata())
    assert len(listed.jobs) == 1


async def test_a_request_id_reused_for_another_request_is_refused(
    edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    await read_all(edit.Inpaint(inpaint(photo_png, mask_png, request_id="k"), metadata=metadata()))
    different = inpaint(photo_png, mask_png, request_id="k", mask_options=pb.MaskOptions(grow_px=3))
    with pytest.raises(aio.AioRpcError) as refused:
        await read_all(edit.Inpaint(different, metadata=metadata()))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == ["request_id"]


async def test_inline_data_comes_to_a_duplicate_that_asks_for_it(
    edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    request = inpaint(
        photo_png, mask_png, request_id="inline", output=common_pb2.OutputOptions(inline=True)
    )
    first = await read_all(edit.Inpaint(request, metadata=metadata()))
    again = await read_all(edit.Inpaint(request, metadata=metadata()))
    assert again[-1].completed.data == first[-1].completed.data != b""
