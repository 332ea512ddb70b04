"""Short-lived uploads: received in chunks, owned by their caller, swept after a TTL."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

from retouch.v1 import image_edit_pb2 as pb

from .auth import Caller
from .clock import Clock
from .errors import InvalidArgument
from .ids import new_id
from .jobs.records import UploadRecord
from .jobs.store import JobStore
from .storage import ObjectStore

log = logging.getLogger(__name__)


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

    async def receive(self, chunks: AsyncIterator[pb.UploadChunk], caller: Caller) -> UploadRecord:
        """Store the streamed bytes; refuse empty or oversized uploads."""
        parts: list[bytes] = []
        size = 0
        content_type = ""
        digest = hashlib.sha256()
        async for chunk in chunks:
            if not parts and not content_type:
                content_type = chunk.content_type
            size += len(chunk.data)
            if size > self._max_bytes:
                raise InvalidArgument(
                    "data", f"the upload exceeds the limit of {self._max_bytes} bytes"
                )
            digest.update(chunk.data)
            parts.append(chunk.data)
        if size == 0:
            raise InvalidArgument("data", "the upload is empty: send the image bytes in chunks")
        upload_id = new_id("upl", self._clock)
        key = f"uploads/{caller.tenant}/{caller.subject}/{upload_id}"
        await self._objects.put(
            key, b"".join(parts), content_type=content_type or "application/octet-stream"
        )
        record = UploadRecord(
            upload_id=upload_id,
            owner=caller.owner,
            object_key=key,
            size_bytes=size,
            sha256=digest.hexdigest(),
            content_type=content_type,
            expires_at=self._clock.now() + self._ttl_s,
        )
        await self._store.add_upload(record)
        return record

    async def sweep(self) -> int:
        """Delete expired uploads; returns how many."""
        expired = await self._store.expired_uploads(self._clock.now())
        for upload in expired:
            await self._objects.delete(upload.object_key)
            await self._store.delete_upload(upload.upload_id)
        if expired:
            log.info("swept %d expired upload(s)", len(expired))
        return len(expired)
