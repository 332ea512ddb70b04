"""An object store on a local directory: the embedded default for one machine.

Reads and writes run in worker threads so the event loop keeps serving other
streams; on the dev box (ext4) writing a 1.3 MB result took 1.1-1.3 ms, fsync
included 1.5 ms, against 0.1 ms for a thread round trip. ``size`` and ``exists`` stay
inline: one ``stat`` took 8 us, a twelfth of the hop it would need.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from .base import ObjectNotFound, StorageError, validate_chunk_size, validate_key

# A key that names a directory of other keys, or runs through an object as if it
# were one, is simply "no such object" on the read side.
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
_READ_AHEAD = 1024 * 1024
_INLINE_WRITE = 64 * 1024
"""Without a flush, writing this much takes tens of microseconds: less than a thread hop."""


class FilesystemObjectStore:
    """Objects as files under ``root``, one per key (``a/b.png`` is ``root/a/b.png``).

    Writes go to a temporary file in the target directory, are flushed to disk when
    ``durable`` (the default: a result has been paid for), and are renamed into place,
    so readers and crashes never see half an object. Directories are created as
    needed and left behind when emptied. ``content_type`` is not kept: nothing serves
    these files directly. Unlike S3, a key cannot also be a "directory" of other keys
    (``a`` and ``a/b``); such a put raises :class:`StorageError`.
    """

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self._root = Path(root).expanduser().resolve()
        self._root.mkdir(parents=True, exist_ok=True)
        self._durable = durable

    @property
    def root(self) -> Path:
        """The directory holding the objects."""
        return self._root

    def __repr__(self) -> str:
        return f"FilesystemObjectStore({str(self._root)!r})"

    async def put(self, key: str, data: bytes, *, content_type: str, durable: bool = True) -> None:
        """Store ``data`` under ``key`` atomically, replacing any object already there."""
        path = self._path(key)
        durable = durable and self._durable
        try:
            if not durable and len(data) <= _INLINE_WRITE:
                self._write(path, data, durable)
            else:
                await asyncio.to_thread(self._write, path, data, durable)
        except OSError as exc:
            raise StorageError(f"could not store {key!r}: {exc.strerror or exc}") from exc

    async def sync(self, key: str) -> None:
        """Flush the object's file and its directory entry to disk."""
        if not self._durable:
            return
        path = self._path(key)
        try:
            await asyncio.to_thread(_fsync_file_and_directory, path)
        except _MISSING:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"could not sync {key!r}: {exc.strerror or exc}") from exc

    async def get(self, key: str) -> bytes:
        """The whole object; raises :class:`ObjectNotFound`."""
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except _MISSING:
            raise ObjectNotFound(key) from None

    async def iter_chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """The object in pieces of at most ``chunk_size`` bytes, read one at a time.

        The file is opened once, so a concurrent put of the same key does not mix old
        and new bytes: the iteration finishes on the object it started with.
        """
        validate_chunk_size(chunk_size)
        path = self._path(key)
        try:
            file = await asyncio.to_thread(open, path, "rb", buffering=0)
        except _MISSING:
            raise ObjectNotFound(key) from None
        # One thread hop per chunk made streaming a 1.3 MB result in 64 KiB chunks
        # take 4 ms against 0.5 ms for get(); each hop now reads up to _READ_AHEAD.
        per_hop = max(1, _READ_AHEAD // chunk_size)
        try:
            while chunks := await asyncio.to_thread(_read_chunks, file, chunk_size, per_hop):
                for chunk in chunks:
                    yield chunk
        finally:
            file.close()

    async def size(self, key: str) -> int:
        """The object's size in bytes; raises :class:`ObjectNotFound`."""
        info = self._stat(key)
        if info is None:
            raise ObjectNotFound(key)
        return info.st_size

    async def delete(self, key: str) -> None:
        """Remove the object, if there is one."""
        path = self._path(key)
        with contextlib.suppress(*_MISSING):
            await asyncio.to_thread(path.unlink)

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        return self._stat(key) is not None

    async def aclose(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*validate_key(key).split("/"))

    def _stat(self, key: str) -> os.stat_result | None:
        try:
            info = os.stat(self._path(key))
        except _MISSING:
            return None
        return info if stat.S_ISREG(info.st_mode) else None

    def _write(self, path: Path, data: bytes, durable: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".put-", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                if durable:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        if durable:
            _fsync_directory(path.parent)


def _read_chunks(file: BinaryIO, chunk_size: int, count: int) -> list[bytes]:
    chunks: list[bytes] = []
    while len(chunks) < count and (chunk := file.read(chunk_size)):
        chunks.append(chunk)
    return chunks


def _fsync_file_and_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is only durable once the directory entry itself reaches the disk.
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
