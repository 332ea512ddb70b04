"""The object store interface: flat keys to immutable blobs, as S3 models them.

    StorageError              base of storage failures
    ├── ObjectNotFound        no object under that key (``key`` attribute)
    └── StorageUnavailable    the backend is throttling or failing; also an
                              :class:`~retouch.server.errors.Unavailable`, so callers
                              see UNAVAILABLE with RetryInfo

Keys are ``/``-separated relative paths such as ``results/acme/user:42/job.png``. They
name objects, not files: a backend may map them onto directories, but callers never
rely on that (there is no listing, no rename, no partial write).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol, runtime_checkable

from ..errors import Unavailable

MAX_KEY_BYTES = 1024


class StorageError(Exception):
    """An object store could not do what was asked."""


class ObjectNotFound(StorageError):
    """No object is stored under ``key``."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object stored under {key!r}")
        self.key = key


class StorageUnavailable(StorageError, Unavailable):
    """The backend refused for now (throttling, a 5xx, no connection): retry later."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        Unavailable.__init__(self, message, retry_after=retry_after)


@runtime_checkable
class ObjectStore(Protocol):
    """Where uploads and results live. Every method is safe to call concurrently.

    ``put`` is atomic: a reader sees the old object, the new one or none, never a
    partial one, and concurrent puts of one key leave exactly one of them. Methods
    taking a key raise ``ValueError`` for one :func:`validate_key` refuses.
    """

    async def put(self, key: str, data: bytes, *, content_type: str, durable: bool = True) -> None:
        """Store ``data`` under ``key``, replacing any object already there.

        ``content_type`` is kept by backends that serve objects directly (an S3
        presigned URL answers with it). With ``durable=False`` the object is readable at
        once but may not survive a machine crash until :meth:`sync` returns.
        """
        ...

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        """Store what ``chunks`` yields under ``key`` as it arrives; returns the size.

        For objects of unknown size (uploads): the bytes are written as they come
        (a multipart upload on S3), never held whole. Atomic like :meth:`put`: the
        object appears only once ``chunks`` is exhausted. If ``chunks`` raises or the
        call is cancelled, the partial write is removed (a multipart upload aborted)
        before the exception propagates, and nothing is stored under ``key``.
        """
        ...

    async def sync(self, key: str) -> None:
        """Make an earlier ``put(..., durable=False)`` of ``key`` durable."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole object; raises :class:`ObjectNotFound`."""
        ...

    def iter_chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """The object in pieces of at most ``chunk_size`` bytes, read as it goes.

        A missing object raises :class:`ObjectNotFound` from the first iteration.
        """
        ...

    async def size(self, key: str) -> int:
        """The object's size in bytes; raises :class:`ObjectNotFound`."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object, and any partial write of ``key`` a crashed process left
        (a temporary file, an unfinished multipart upload); deleting a missing one is
        not an error."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    async def aclose(self) -> None:
        """Release connections or handles; the store is unusable afterwards."""
        ...


@runtime_checkable
class PresigningStore(Protocol):
    """A store whose objects can be fetched over HTTP(S) with a signed, expiring URL
    (S3 and its kin). Providers that fetch images by URL are handed such links."""

    async def presigned_url(self, key: str, expires_s: int) -> str:
        """A GET URL for ``key`` valid for ``expires_s`` seconds, usable without any
        other credential. It does not check that the object exists."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise ``ValueError``.

    A key is 1..1024 UTF-8 bytes of ``/``-separated segments, none empty, ``.`` or
    ``..``, with no backslash or control character, and no leading ``/``: whatever the
    backend, a key can never climb out of the store or alias another key.
    """
    if not key:
        raise ValueError("an object key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise ValueError(f"object key {key!r} must be relative, without a leading '/'")
    if "\\" in key:
        raise ValueError(f"object key {key!r} must not contain a backslash")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise ValueError(f"object key {key!r} must not contain control characters")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    return key


def validate_chunk_size(chunk_size: int) -> int:
    """Return ``chunk_size`` if positive, else raise ``ValueError``."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return chunk_size
