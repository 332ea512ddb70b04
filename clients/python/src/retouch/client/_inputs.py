"""What an edit accepts as an image: bytes, a file, or an image already on the server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from retouch.v1 import common_pb2

from ._models import Upload
from ._results import ResultInfo

MiB = 1024 * 1024
UPLOAD_THRESHOLD = 3 * MiB
"""Inputs larger than this go through the Upload RPC; gRPC's usual message limit is 4 MiB."""
CHUNK_SIZE = 1 * MiB


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image already on the server, by id: ``ImageRef(upload_id=...)`` for an upload,
    ``ImageRef(result_id=...)`` for an earlier result of the same caller."""

    upload_id: str = ""
    result_id: str = ""

    def __post_init__(self) -> None:
        if bool(self.upload_id) == bool(self.result_id):
            raise ValueError("ImageRef needs exactly one of upload_id and result_id")


ImageSource: TypeAlias = bytes | str | os.PathLike[str] | ImageRef | Upload | ResultInfo
"""An edit's input: encoded bytes (PNG, JPEG or WebP), a path to such a file (a ``str``
is always a path), or an image on the server (an :class:`ImageRef`, an :class:`Upload`
or a result)."""

Uploader: TypeAlias = Callable[[bytes], Awaitable[Upload]]


async def read_source(source: bytes | str | os.PathLike[str]) -> bytes:
    """The bytes of ``source``; a path is read off the event loop. ``OSError`` (a missing
    or unreadable file) propagates unchanged."""
    if isinstance(source, bytes):
        return source
    return await asyncio.to_thread(Path(source).read_bytes)


async def image_input(
    source: ImageSource, *, upload: Uploader, threshold: int
) -> common_pb2.ImageInput:
    """``source`` as an ``ImageInput``; bytes larger than ``threshold`` are uploaded
    first with ``upload`` and sent by ``upload_id``."""
    if isinstance(source, ImageRef):
        if source.upload_id:
            return common_pb2.ImageInput(upload_id=source.upload_id)
        return common_pb2.ImageInput(result_id=source.result_id)
    if isinstance(source, Upload):
        return common_pb2.ImageInput(upload_id=source.upload_id)
    if isinstance(source, ResultInfo):
        return common_pb2.ImageInput(result_id=source.result_id)
    data = await read_source(source)
    if len(data) > threshold:
        uploaded = await upload(data)
        return common_pb2.ImageInput(upload_id=uploaded.upload_id)
    return common_pb2.ImageInput(data=data)


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in pieces of at most ``size`` bytes (one empty piece for empty data)."""
    if not data:
        yield b""
        return
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def sniff_content_type(data: bytes) -> str:
    """The MIME type the first bytes announce, or ``""`` when unknown."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return ""
