"""Object storage for uploads and results, behind one interface with URL selection.

``open_store("file:///var/lib/retouch/objects")`` (or a plain path) gives the
filesystem store, ``open_store("memory://")`` the in-memory one, and
``open_store("s3://bucket?endpoint_url=…&region=…")`` an S3-compatible one
(:mod:`.s3`, imported only then: the embedded defaults never load the AWS SDK).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from .base import (
    ObjectNotFound,
    ObjectStore,
    PresigningStore,
    StorageError,
    StorageUnavailable,
    validate_key,
)
from .filesystem import FilesystemObjectStore
from .memory import MemoryObjectStore

__all__ = [
    "FilesystemObjectStore",
    "MemoryObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "PresigningStore",
    "StorageError",
    "StorageUnavailable",
    "open_store",
    "validate_key",
]


def open_store(url: str) -> ObjectStore:
    """The object store ``url`` names: ``file:///abs/path``, a plain path, ``memory://``
    or ``s3://bucket[/prefix]?endpoint_url=…&region=…``.

    Raises ``ValueError`` for an empty URL, a ``file:`` URL that is not an absolute
    local path, or an unknown scheme.
    """
    if not url.strip():
        raise ValueError("the storage URL is empty; use file:///path/to/dir or memory://")
    if "://" not in url:
        return FilesystemObjectStore(Path(url))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return MemoryObjectStore()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(
                f"storage URL {url!r} is not an absolute local path; "
                "write file:///abs/path (three slashes)"
            )
        return FilesystemObjectStore(Path(unquote(parts.path)))
    if scheme == "s3":
        from .s3 import S3Location, S3ObjectStore

        return S3ObjectStore(S3Location.from_url(url))
    raise ValueError(
        f"unknown storage URL scheme {parts.scheme!r} in {url!r}; use file://, memory:// or s3://"
    )
