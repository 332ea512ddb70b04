"""A job running in this process: its events recorded as they happen and fanned out to
every stream here that follows it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from google.rpc import status_pb2

from retouch.v1 import image_edit_pb2 as pb

from ..convert import job_event
from ..errors import RetouchError
from .events import Completed, JobEventData
from .records import ResultRecord
from .store import JobStore

log = logging.getLogger(__name__)

RECORD_WINDOW_S = 0.02
"""How long a new event may wait for others to be written with it: a job's burst of
progress costs one write, and a follower on another replica is at most this far behind."""
RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 1.0
"""A write of events that failed (the database away) is tried again after delays
doubling from the first to the most, until it goes in or the job ends."""


class LiveJob:
    """Events of a job that runs in this process.

    Each event is written to the store as it happens, so a follower on another replica
    reads the same sequence, and all of them are written before the job ends: the events
    of one :data:`RECORD_WINDOW_S` go in one write, and those still unwritten when the
    job ends go in the write that records its end (:meth:`begin_settling`). A write that
    fails is kept, ahead of newer events, and tried again with them (see
    :data:`RETRY_MAX_DELAY_S`); at the end it goes with the others. Followers
    here replay what happened so far and then wait for more: the events are one shared
    list and each follower keeps only its index into it, so a follower that attaches late
    or reads slowly holds no buffer of its own and never blocks the job.

    The ``Completed`` event is held back: it goes to the store in the same write that
    records the job SUCCEEDED, and to the followers here once that write won
    (:meth:`succeeded`). A replica that stalled while another failed and refunded its
    job so never tells anyone it succeeded.
    """

    def __init__(
        self, job_id: str, owner: str, store: JobStore, *, record_window_s: float = RECORD_WINDOW_S
    ) -> None:
        self.job_id = job_id
        self.owner = owner
        self.events: list[pb.JobEvent] = []
        self.final_status: status_pb2.Status | None = None
        self.inline_data: bytes | None = None
        self.result: ResultRecord | None = None
        """A success's stored result and (``inline_data``) its bytes, for the streams here."""
        self.preview: tuple[int, bytes] | None = None
        """The latest preview: the seq of the progress event it belongs to, and its JPEG."""
        self.task: asyncio.Task[None] | None = None
        self.cancel_reason: RetouchError | None = None
        self.followers = 0
        """Streams following the job here now."""
        self.settling = False
        """Whether the job's end is being recorded; it can no longer be cancelled."""
        self._completion: pb.JobEvent | None = None
        self.lease_until = 0.0
        """Until when this replica holds the job, as last renewed."""
        self._store = store
        self._unrecorded: list[tuple[int, bytes]] = []
        self._recorder: asyncio.Task[None] | None = None
        self._record_later: asyncio.TimerHandle | None = None
        self._record_window_s = record_window_s
        self._retry_delay_s = 0.0
        """How long the next retry of a failed write waits; 0 while writes succeed."""
        self._changed = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self.final_status is not None

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def publish(self, event: JobEventData) -> None:
        """The job's next event: to the followers here at once, and to the store in order,
        in the background, within :data:`RECORD_WINDOW_S`. A ``Completed`` event, the
        last, is held back until the job's success is recorded (see the class docstring)."""
        message = job_event(self.job_id, self.last_seq + 1, event)
        if isinstance(event, Completed):
            self._completion = message
            return
        self.events.append(message)
        self._unrecorded.append((message.seq, message.SerializeToString()))
        if self._record_later is None and not self._recording:
            self._record_later = asyncio.get_running_loop().call_later(
                self._record_window_s, self._start_recording
            )
        self._wake()

    def publish_preview(self, event: JobEventData, jpeg: bytes) -> None:
        """Publish ``event`` carrying the preview ``jpeg``. Only the latest preview's
        bytes are kept, in memory and not in the store: a follower that falls behind
        gets the progress events in between without theirs."""
        self.publish(event)
        self.preview = (self.last_seq, jpeg)

    def _with_preview(self, message: pb.JobEvent) -> pb.JobEvent:
        preview = self.preview
        if preview is None or preview[0] != message.seq:
            return message
        with_preview = pb.JobEvent()
        with_preview.CopyFrom(message)
        with_preview.progress.preview = preview[1]
        return with_preview

    @property
    def _recording(self) -> bool:
        return self._recorder is not None and not self._recorder.done()

    def _start_recording(self) -> None:
        self._record_later = None
        if self._unrecorded:
            self._recorder = asyncio.create_task(self._record(), name=f"events of {self.job_id}")

    async def _record(self) -> None:
        # Whatever piled up while the last write ran goes in the next one: a job never
        # waits for the store per event.
        while self._unrecorded:
            batch, self._unrecorded = self._unrecorded, []
            try:
                await self._store.append_events(self.job_id, batch)
            except asyncio.CancelledError:
                self._unrecorded = batch + self._unrecorded
                raise
            except Exception as exc:
                self._unrecorded = batch + self._unrecorded
                self._retry_later(exc)
                return
            self._retry_delay_s = 0.0

    def _retry_later(self, exc: Exception) -> None:
        if self._retry_delay_s == 0.0:
            log.warning(
                "job %s: writing its events failed; retrying until it ends (%r)",
                self.job_id,
                exc,
            )
            self._retry_delay_s = RETRY_FIRST_DELAY_S
        else:
            self._retry_delay_s = min(self._retry_delay_s * 2, RETRY_MAX_DELAY_S)
        self._record_later = asyncio.get_running_loop().call_later(
            self._retry_delay_s, self._start_recording
        )

    def _stop_waiting_to_record(self) -> None:
        if self._record_later is not None:
            self._record_later.cancel()
            self._record_later = None

    async def writes_done(self) -> None:
        """Wait for the store write under way, if any, leaving events not yet in the
        store, those of a failed write included, for :meth:`begin_settling`."""
        self._stop_waiting_to_record()
        while (recorder := self._recorder) is not None and not recorder.done():
            await asyncio.shield(recorder)
            # A write that failed just now scheduled its retry: the end's write takes over.
            self._stop_waiting_to_record()

    def begin_settling(self, *, succeeded: bool) -> list[tuple[int, bytes]]:
        """The job is ending: from now on it cannot be cancelled. Returns the events the
        store does not hold yet, ``(seq, payload)`` in order, for it to record with the
        job's end: those :meth:`writes_done` left, and on success the held-back
        ``Completed``. Call it once no write is under way."""
        self.settling = True
        closing, self._unrecorded = self._unrecorded, []
        completion = self._completion
        if succeeded and completion is not None:
            closing.append((completion.seq, completion.SerializeToString()))
        return closing

    def succeeded(self) -> None:
        """The job's success is recorded: followers here get the held-back ``Completed``
        event now, while the job's charge is still being settled."""
        if self._completion is not None:
            self.events.append(self._completion)
            self._completion = None
            self._wake()

    def finish(self, status: status_pb2.Status) -> None:
        """Record the job's final status (code 0 for success) and wake followers; on
        success they get the held-back ``Completed`` event first, otherwise never."""
        if status.code == 0:
            self.succeeded()
        self._completion = None
        self.final_status = status
        self._wake()

    def cancel(self, reason: RetouchError) -> bool:
        """Ask the job's task to stop; ``reason`` becomes its final status. False when
        there is nothing left to stop: the job has ended or is recording its end."""
        if self.settling or self.finished or self.task is None or self.task.done():
            return False
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.task.cancel(reason.message)
        return True

    async def follow(self, after_seq: int = 0) -> AsyncIterator[pb.JobEvent]:
        """Events with seq > ``after_seq``, live until the job finishes."""
        index = after_seq
        self.followers += 1
        self._wake()
        try:
            while True:
                while index < len(self.events):
                    yield self._with_preview(self.events[index])
                    index += 1
                if self.finished:
                    return
                changed = self._changed
                await changed.wait()
        finally:
            self.followers -= 1
            self._wake()

    async def wait_for_followers(self, count: int) -> None:
        """Wait until exactly ``count`` streams follow the job here."""
        while True:
            changed = self._changed
            if self.followers == count:
                return
            await changed.wait()

    async def wait_finished(self) -> status_pb2.Status:
        while self.final_status is None:
            await self._changed.wait()
        return self.final_status

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
