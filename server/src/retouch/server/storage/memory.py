"""An object store in a dict, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from .base import ObjectNotFound, validate_chunk_size, validate_key


class MemoryObjectStore:
    """Objects held in process memory; lost when the process ends.

    Every operation completes without awaiting anything, so on one event loop each is
    atomic. ``content_type`` is kept and readable with :meth:`content_type`, which
    tests use to check what the server declared.
    """

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes | memoryview, str]] = {}

    async def put(self, key: str, data: bytes, *, content_type: str, durable: bool = True) -> None:
        """Store ``data`` under ``key``, replacing any object already there."""
        self._objects[validate_key(key)] = (bytes(data), content_type)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        """Store what ``chunks`` yields once it ends; nothing if it raises."""
        validate_key(key)
        data = bytearray()
        async for chunk in chunks:
            data += chunk
        # bytes(data) would copy: the object is kept as the buffer it was read into.
        self._objects[key] = (memoryview(data).toreadonly(), content_type)
        return len(data)

    async def sync(self, key: str) -> None:
        """Nothing to do: memory is as durable as it gets."""
        self._lookup(key)

    async def get(self, key: str) -> bytes:
        """The whole object; raises :class:`ObjectNotFound`."""
        return bytes(self._lookup(key)[0])

    async def iter_chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """The object in pieces of at most ``chunk_size`` bytes."""
        validate_chunk_size(chunk_size)
        data = self._lookup(key)[0]
        for start in range(0, len(data), chunk_size):
            yield bytes(data[start : start + chunk_size])

    async def size(self, key: str) -> int:
        """The object's size in bytes; raises :class:`ObjectNotFound`."""
        return len(self._lookup(key)[0])

    async def delete(self, key: str) -> None:
        """Remove the object, if there is one."""
        self._objects.pop(validate_key(key), None)

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        return validate_key(key) in self._objects

    async def aclose(self) -> None:
        """Nothing to release."""

    def content_type(self, key: str) -> str:
        """The content type the object was stored with; raises :class:`ObjectNotFound`."""
        return self._lookup(key)[1]

    def _lookup(self, key: str) -> tuple[bytes | memoryview, str]:
        try:
            return self._objects[validate_key(key)]
        except KeyError:
            raise ObjectNotFound(key) from None
