"""The ImageEdit service: edits as streamed jobs, uploads, job queries and downloads."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from retouch.v1 import image_edit_pb2 as pb
from retouch.v1 import image_edit_pb2_grpc

from ..auth import current_caller
from ..convert import JOB_STATES_FROM_PROTO, job, timestamp
from ..edits import EditMessage
from ..errors import Cancelled, DeadlineExceeded, InvalidArgument, NotFound, echo
from ..ids import is_id
from ..jobs import JobStore
from ..jobs.live import LiveJob
from ..jobs.manager import JobManager
from ..jobs.pipeline import EditPipeline
from ..jobs.records import JobState, ResultRecord
from ..result_links import ResultLinks
from ..storage import ObjectNotFound, ObjectStore
from ..uploads import Uploads
from .rpc import edit_rpc, rpc

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_SEQ = 2**63 - 1
"""The largest sequence number the stores can compare with (a signed 64-bit integer);
no job has that many events, so a larger ``after_seq`` means "none of the past ones"."""

INLINE_FRAMING_BYTES = 32
"""More than inline bytes add to a Completed's message beside themselves: the tag and
length prefix of ``data`` and the longer length prefix of the ``completed`` around it."""

Context = aio.ServicerContext[Any, Any]

log = logging.getLogger(__name__)


class ImageEditService(image_edit_pb2_grpc.ImageEditServicer):
    """Implements ``retouch.v1.ImageEdit``."""

    def __init__(
        self,
        *,
        pipeline: EditPipeline,
        jobs: JobManager,
        store: JobStore,
        objects: ObjectStore,
        uploads: Uploads,
        download_chunk_bytes: int,
        max_send_message_bytes: int,
        links: ResultLinks | None = None,
    ) -> None:
        """``max_send_message_bytes`` is the server's gRPC send limit: a Completed whose
        inline bytes would pass it goes without them."""
        self._pipeline = pipeline
        self._jobs = jobs
        self._store = store
        self._objects = objects
        self._uploads = uploads
        self._chunk = download_chunk_bytes
        self._max_send = max_send_message_bytes
        self._links = links

    @edit_rpc
    async def Inpaint(
        self, request: pb.InpaintRequest, context: Context
    ) -> AsyncIterator[pb.JobEvent]:
        async for event in self._edit(request, context):
            yield event

    @edit_rpc
    async def Outpaint(
        self, request: pb.OutpaintRequest, context: Context
    ) -> AsyncIterator[pb.JobEvent]:
        async for event in self._edit(request, context):
            yield event

    @edit_rpc
    async def Enhance(
        self, request: pb.EnhanceRequest, context: Context
    ) -> AsyncIterator[pb.JobEvent]:
        async for event in self._edit(request, context):
            yield event

    async def _edit(self, request: EditMessage, context: Context) -> AsyncIterator[pb.JobEvent]:
        """Start the job (or re-attach to it, by request_id) and follow it. The job runs
        on when this stream ends first, unless the request asked otherwise."""
        caller = current_caller()
        # No deadline reads as None at run time, whatever the stubs say.
        time_left: float | None = context.time_remaining()
        job_id = await self._pipeline.submit(request, caller, time_left=time_left)
        started_here = self._jobs.live_job(job_id)
        finished = False
        try:
            async for event in self._jobs.follow(job_id, caller):
                yield await self._as_sent(event, inline=request.output.inline, live=started_here)
            finished = True
        finally:
            self._pipeline.scheduler.stream_ended()
            if not finished and request.cancel_on_disconnect:
                remaining: float | None = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                self._jobs.abandon(
                    job_id,
                    DeadlineExceeded("the caller's deadline passed before the job finished")
                    if expired
                    else Cancelled("the caller's stream ended and it asked to cancel then"),
                )

    async def _as_sent(
        self, event: pb.JobEvent, *, inline: bool = False, live: LiveJob | None = None
    ) -> pb.JobEvent:
        """``event`` as this stream sends it: a Completed gets its ``result_url`` and,
        when the request asked for it ``inline`` and it fits in one message, the encoded
        result, in one copy."""
        if not event.HasField("completed"):
            return event
        # The job that this stream started still holds its result and bytes; a duplicate
        # request that re-attached reads them back from the store.
        data = live.inline_data if inline and live is not None else None
        result = live.result if live is not None else None
        if result is None and (self._links is not None or (inline and data is None)):
            result = await self._store.get_result(event.completed.result_id)
        # Made as the event is sent, not when it was recorded: a replayed Completed
        # carries a link that is fresh, not one that expired with the first stream.
        url = ""
        if self._links is not None and result is not None:
            url = await self._links.url(result)
        if not url and not inline:
            return event
        sent = pb.JobEvent()
        sent.CopyFrom(event)
        if url:
            sent.completed.result_url = url
        if inline:
            data = await self._inline_data(sent, data, result)
            if data is not None:
                sent.completed.data = data
        return sent

    async def _inline_data(
        self, sent: pb.JobEvent, data: bytes | None, result: ResultRecord | None
    ) -> bytes | None:
        """The result's bytes for ``sent``, or None when they would take it past the send
        limit: gRPC would end the stream RESOURCE_EXHAUSTED instead, and the caller, charged
        already, would never hear Completed (result_id and DownloadResult still serve it)."""
        size = len(data) if data is not None else result.size_bytes if result else 0
        if sent.ByteSize() + size + INLINE_FRAMING_BYTES > self._max_send:
            log.info(
                "job %s: its %d-byte result does not fit in one message under "
                "max_send_message_bytes (%d); Completed goes without inline data",
                sent.job_id,
                size,
                self._max_send,
            )
            return None
        if data is None and result is not None:
            data = await self._objects.get(result.object_key)
        return data

    @rpc
    async def Upload(
        self, request_iterator: AsyncIterator[pb.UploadChunk], context: Context
    ) -> pb.Upload:
        record = await self._uploads.receive(request_iterator, current_caller())
        return pb.Upload(
            upload_id=record.upload_id,
            size_bytes=record.size_bytes,
            sha256=record.sha256,
            expires_at=timestamp(record.expires_at),
        )

    @rpc
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        record = await self._jobs.get(request.job_id, current_caller())
        result = await self._store.get_result(record.result_id) if record.result_id else None
        url = await self._links.url(result) if result is not None and self._links else ""
        message = job(record, result, url)
        if record.state is JobState.QUEUED:
            await self._add_queue_place(message)
        return message

    async def _add_queue_place(self, message: pb.Job) -> None:
        """Copy a waiting job's latest place in its provider's queue from its events:
        the live ones when it waits here, else those recorded, which every replica reads."""
        live = self._jobs.live_job(message.job_id)
        if live is not None:
            events = list(live.events)
        else:
            recorded = await self._store.events_after(message.job_id, 0)
            events = [pb.JobEvent.FromString(payload) for payload in recorded]
        for event in reversed(events):
            if event.HasField("progress"):
                if event.progress.stage == "queued":
                    message.queue_position = event.progress.queue_position
                    message.estimated_start.CopyFrom(event.progress.estimated_start)
                return

    @rpc
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        if request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"page_size must be 0..{MAX_PAGE_SIZE}")
        if request.state and request.state not in JOB_STATES_FROM_PROTO:
            raise InvalidArgument("state", "unknown job state")
        limit = request.page_size or DEFAULT_PAGE_SIZE
        owner = current_caller().owner
        records = await self._store.list_jobs(
            owner,
            state=JOB_STATES_FROM_PROTO.get(request.state),
            before_id=await self._page_start(request.page_token, owner),
            limit=limit + 1,
        )
        page = records[:limit]
        return pb.ListJobsResponse(
            jobs=[job(r) for r in page],
            next_page_token=page[-1].job_id if len(records) > limit else "",
        )

    async def _page_start(self, page_token: str, owner: str) -> str | None:
        """The job id a ``page_token`` continues after, or None for the first page.

        A token is the id of the last job of the page before, so only an id of one of
        the caller's own jobs is one this server issued to them: anything else, another
        caller's job id included, gets the same refusal, which tells nothing about it.
        """
        if not page_token:
            return None
        record = await self._store.get_job(page_token) if is_id("job", page_token) else None
        if record is None or record.owner != owner:
            raise InvalidArgument(
                "page_token",
                "page_token is not one ListJobs returned to this caller, or its job has "
                "since been deleted: list again without a page_token",
            )
        return page_token

    @rpc
    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.Job:
        record = await self._jobs.cancel(request.job_id, current_caller())
        return job(record)

    @rpc
    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Context
    ) -> AsyncIterator[pb.JobEvent]:
        after_seq = min(request.after_seq, MAX_SEQ)
        async for event in self._jobs.follow(request.job_id, current_caller(), after_seq):
            yield await self._as_sent(event)

    @rpc
    async def DownloadResult(
        self, request: pb.DownloadResultRequest, context: Context
    ) -> AsyncIterator[pb.Chunk]:
        caller = current_caller()
        result = await self._store.get_result(request.result_id) if request.result_id else None
        if result is None or result.owner != caller.owner:
            raise NotFound(f"result {echo(request.result_id)} not found")
        first = True
        try:
            async for data in self._objects.iter_chunks(result.object_key, self._chunk):
                if first:
                    yield pb.Chunk(
                        data=data, total_size=result.size_bytes, content_type=result.content_type
                    )
                    first = False
                else:
                    yield pb.Chunk(data=data)
        except ObjectNotFound:
            raise NotFound(f"result {echo(request.result_id)} not found") from None


__all__ = ["ImageEditService"]
