"""Turning an ``ImageInput`` (inline bytes, upload or earlier result) into bytes."""

from __future__ import annotations

from retouch.v1 import common_pb2

from .auth import Caller
from .clock import Clock
from .errors import InvalidArgument, NotFound, echo
from .jobs.store import JobStore
from .storage import ObjectNotFound, ObjectStore


class InputResolver:
    """Reads inputs the caller may use; anything else is NOT_FOUND."""

    def __init__(self, store: JobStore, objects: ObjectStore, clock: Clock) -> None:
        self._store = store
        self._objects = objects
        self._clock = clock

    async def read(self, image: common_pb2.ImageInput, caller: Caller, *, field: str) -> bytes:
        """The encoded bytes of ``image``; ``field`` names it in errors."""
        source = image.WhichOneof("source")
        if source == "data":
            if not image.data:
                raise InvalidArgument(f"{field}.data", "the image data is empty")
            return image.data
        if source == "upload_id":
            upload = await self._store.get_upload(image.upload_id)
            if (
                upload is None
                or upload.owner != caller.owner
                or upload.expires_at <= self._clock.now()
            ):
                raise NotFound(
                    f"upload {echo(image.upload_id)} not found: it may have expired; upload again"
                )
            return await self._get(upload.object_key, f"upload {echo(image.upload_id)}")
        if source == "result_id":
            result = await self._store.get_result(image.result_id)
            if result is None or result.owner != caller.owner:
                raise NotFound(f"result {echo(image.result_id)} not found")
            return await self._get(result.object_key, f"result {echo(image.result_id)}")
        raise InvalidArgument(field, f"{field} is required: set data, upload_id or result_id")

    async def _get(self, key: str, what: str) -> bytes:
        try:
            return await self._objects.get(key)
        except ObjectNotFound:
            raise NotFound(f"{what} not found") from None
