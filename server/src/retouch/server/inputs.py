"""Turning an ``ImageInput`` (inline bytes, upload or earlier result) into bytes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from retouch.v1 import common_pb2

from .auth import Caller
from .clock import Clock
from .errors import InvalidArgument, NotFound, echo
from .jobs.store import JobStore
from .storage import ObjectNotFound, ObjectStore


@dataclass(frozen=True, slots=True)
class InputFile:
    """An input's encoded bytes, and its object key when it came from the object store.

    Inline bytes are left in the request message, which gRPC keeps for the whole call;
    every read of :attr:`data` copies them out. So a job waiting for a slot holds its
    input once, not twice, and a reader should keep what it read only while it needs it.
    """

    source: common_pb2.ImageInput | bytes = dataclasses.field(repr=False)
    """The request's ``ImageInput`` for inline bytes, else the bytes read from the store."""
    object_key: str | None = None

    @property
    def data(self) -> bytes:
        if isinstance(self.source, bytes):
            return self.source
        return self.source.data


class InputResolver:
    """Reads inputs the caller may use; anything else is NOT_FOUND."""

    def __init__(self, store: JobStore, objects: ObjectStore, clock: Clock) -> None:
        self._store = store
        self._objects = objects
        self._clock = clock

    async def read(self, image: common_pb2.ImageInput, caller: Caller, *, field: str) -> bytes:
        """The encoded bytes of ``image``; ``field`` names it in errors."""
        return (await self.fetch(image, caller, field=field)).data

    async def fetch(self, image: common_pb2.ImageInput, caller: Caller, *, field: str) -> InputFile:
        """``image``'s bytes and, for an upload or result, where the store keeps them."""
        source = image.WhichOneof("source")
        if source == "data":
            if not image.data:
                raise InvalidArgument(f"{field}.data", "the image data is empty")
            return InputFile(image)
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
            data = await self._get(upload.object_key, f"upload {echo(image.upload_id)}")
            return InputFile(data, object_key=upload.object_key)
        if source == "result_id":
            result = await self._store.get_result(image.result_id)
            if result is None or result.owner != caller.owner:
                raise NotFound(f"result {echo(image.result_id)} not found")
            data = await self._get(result.object_key, f"result {echo(image.result_id)}")
            return InputFile(data, object_key=result.object_key)
        raise InvalidArgument(field, f"{field} is required: set data, upload_id or result_id")

    async def _get(self, key: str, what: str) -> bytes:
        try:
            return await self._objects.get(key)
        except ObjectNotFound:
            raise NotFound(f"{what} not found") from None
