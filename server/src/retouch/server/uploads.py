"""Short-lived uploads: received in chunks, owned by their caller, swept after a TTL."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from retouch.v1 import image_edit_pb2 as pb

from .auth import Caller
from .cancellation import finish_even_if_cancelled
from .clock import Clock
from .errors import InvalidArgument
from .ids import new_id
from .jobs.records import UploadRecord
from .jobs.store import JobStore
from .request_checks import check_media_type
from .storage import ObjectStore, StorageError

log = logging.getLogger(__name__)

PENDING_PREFIX = "upp"
"""Id prefix of the record an upload in progress leaves, so a crash is swept."""
PENDING_OWNER = ""
"""No caller's owner is empty: a pending upload can never be used as an input."""


class Uploads:
    """Receives uploads and deletes them when they expire."""

    def __init__(
        self, store: JobStore, objects: ObjectStore, clock: Clock, *, max_bytes: int, ttl_s: int
    ) -> None:
        self._store = store
        self._objects = objects
        self._clock = clock
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._cleanups: set[asyncio.Task[None]] = set()

    async def receive(self, chunks: AsyncIterator[pb.UploadChunk], caller: Caller) -> UploadRecord:
        """Stream the bytes to the object store as they arrive; refuse empty or
        oversized uploads.

        A pending record (owned by nobody, so no caller can use it) is written first
        and expires with the upload, so that whatever a crash leaves mid-upload is
        removed by :meth:`sweep`. A failed or cancelled upload removes its partial
        object and its pending record before the error propagates, so the caller has
        its status only once that is done, and a cancellation (gRPC cancelling calls at
        the end of a graceful stop) waits for it too; :meth:`drain` waits for any
        still running before the database closes.
        """
        upload_id = new_id("upl", self._clock)
        key = f"uploads/{caller.tenant}/{caller.subject}/{upload_id}"
        pending = UploadRecord(
            upload_id=new_id(PENDING_PREFIX, self._clock),
            owner=PENDING_OWNER,
            object_key=key,
            size_bytes=0,
            sha256="",
            content_type="",
            expires_at=self._clock.now() + self._ttl_s,
        )
        await self._store.add_upload(pending)
        received = _Received(chunks, self._max_bytes)
        stored: UploadRecord | None = None
        try:
            content_type = await received.content_type()
            size = await self._objects.put_stream(
                key, received.data(), content_type=content_type or "application/octet-stream"
            )
            if size == 0:
                raise InvalidArgument("data", "the upload is empty: send the image bytes in chunks")
            stored = dataclasses.replace(
                pending,
                upload_id=upload_id,
                owner=caller.owner,
                size_bytes=size,
                sha256=received.digest.hexdigest(),
                content_type=content_type,
            )
            await self._store.add_upload(stored)
        finally:
            await self._finish(self._settle(pending, keep_object=stored is not None))
        return stored

    async def drain(self) -> None:
        """Wait for the clean-ups of uploads that were cancelled mid-way."""
        while self._cleanups:
            await asyncio.wait(set(self._cleanups))

    async def _finish(self, cleanup: Coroutine[Any, Any, None]) -> None:
        """Run ``cleanup`` to its end even if this task is cancelled meanwhile, where
        :meth:`drain` can wait for it."""
        task = asyncio.ensure_future(cleanup)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await finish_even_if_cancelled(task)

    async def _settle(self, pending: UploadRecord, *, keep_object: bool) -> None:
        """Remove the pending record, and the object unless it is kept. Failures are
        logged, not raised: the caller's status is the upload's own error, and what
        is left behind expires with the pending record and is swept."""
        if not keep_object:
            try:
                await self._objects.delete(pending.object_key)
            except StorageError:
                # The pending record stays, so the sweeper tries again once it expires.
                log.warning(
                    "could not remove the partial upload %s; it will be swept",
                    pending.object_key,
                    exc_info=True,
                )
                return
        try:
            await self._store.delete_upload(pending.upload_id)
        except Exception:
            log.warning(
                "could not remove the pending upload record %s; it will be swept",
                pending.upload_id,
                exc_info=True,
            )

    async def sweep(self) -> int:
        """Delete expired uploads; returns how many."""
        expired = await self._store.expired_uploads(self._clock.now())
        for upload in expired:
            await self._objects.delete(upload.object_key)
            await self._store.delete_upload(upload.upload_id)
        if expired:
            log.info("swept %d expired upload(s)", len(expired))
        return len(expired)


class _Received:
    """An Upload's chunks as bytes, checked against the size limit and hashed as
    they pass; the first chunk is read early for its content type."""

    def __init__(self, chunks: AsyncIterator[pb.UploadChunk], max_bytes: int) -> None:
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._first: pb.UploadChunk | None = None
        self.size = 0
        self.digest = hashlib.sha256()

    async def content_type(self) -> str:
        """The first chunk's declared media type, checked; empty when none is declared.
        It is not matched against the bytes: an upload is sniffed and decoded by its
        bytes when used, so the declared type never decides how it is read."""
        self._first = await anext(self._chunks, None)
        declared = self._first.content_type if self._first is not None else ""
        if declared:
            check_media_type(declared, "content_type")
        return declared

    async def data(self) -> AsyncIterator[bytes]:
        if self._first is not None:
            yield self._checked(self._first.data)
            self._first = None
        async for chunk in self._chunks:
            yield self._checked(chunk.data)

    def _checked(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size > self._max_bytes:
            raise InvalidArgument(
                "data", f"the upload exceeds the limit of {self._max_bytes} bytes"
            )
        self.digest.update(data)
        return data
