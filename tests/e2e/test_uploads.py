"""Uploads: streamed in chunks, used as inputs by their owner, refused when too big."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc import aio

from retouch.server.app import running
from retouch.server.clock import ManualClock
from retouch.server.config import ServerConfig
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.helpers import bad_fields, metadata

if TYPE_CHECKING:
    Stub = image_edit_pb2_grpc.ImageEditAsyncStub


async def chunks(
    data: bytes, size: int = 64 * 1024, *, content_type: str = "image/png"
) -> AsyncIterator[pb.UploadChunk]:
    for start in range(0, len(data), size):
        yield pb.UploadChunk(data=data[start : start + size], content_type=content_type)


async def test_an_upload_is_an_input_for_its_owner(
    edit: Stub, photo_png: bytes, mask_png: bytes
) -> None:
    upload = await edit.Upload(chunks(photo_png), metadata=metadata())
    assert upload.size_bytes == len(photo_png)
    assert upload.sha256 == hashlib.sha256(photo_png).hexdigest()
    assert upload.expires_at.seconds > 0
    events = [
        e
        async for e in edit.Inpaint(
            pb.InpaintRequest(
                image=common_pb2.ImageInput(upload_id=upload.upload_id),
                mask=common_pb2.ImageInput(data=mask_png),
            ),
            metadata=metadata(),
        )
    ]
    assert events[-1].HasField("completed")
    with pytest.raises(aio.AioRpcError) as stranger:
        async for _ in edit.Inpaint(
            pb.InpaintRequest(
                image=common_pb2.ImageInput(upload_id=upload.upload_id),
                mask=common_pb2.ImageInput(data=mask_png),
            ),
            metadata=metadata(subject="user:eve"),
        ):
            pass
    assert stranger.value.code() == grpc.StatusCode.NOT_FOUND


async def test_empty_and_oversized_uploads_are_refused(tmp_path: Path, photo_png: bytes) -> None:
    config = ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path, max_upload_bytes=1000)
    async with (
        running(config) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        edit = image_edit_pb2_grpc.ImageEditStub(channel)
        for data in (b"", photo_png):
            with pytest.raises(aio.AioRpcError) as refused:
                await edit.Upload(chunks(data, 100), metadata=metadata())
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "content_type",
    [
        "image/png\r\nX-Evil: 1\x00",
        "image/" + "p" * (1024 * 1024),
        "image/png; charset=utf-8",
        "png",
        "image/pñg",
        "/png",
    ],
)
async def test_a_malformed_content_type_is_refused_and_nothing_is_kept(
    tmp_path: Path, photo_png: bytes, content_type: str
) -> None:
    config = ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path)
    async with (
        running(config) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        edit = image_edit_pb2_grpc.ImageEditStub(channel)
        with pytest.raises(aio.AioRpcError) as refused:
            await edit.Upload(chunks(photo_png, content_type=content_type), metadata=metadata())
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(refused.value) == ["content_type"]
        assert await server.store.expired_uploads(float("inf")) == []
    assert not [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]


async def test_a_well_formed_content_type_is_accepted_whatever_the_bytes(
    edit: Stub, photo_png: bytes
) -> None:
    upload = await edit.Upload(
        chunks(photo_png, content_type="application/vnd.example+octet-stream"),
        metadata=metadata(),
    )
    assert upload.size_bytes == len(photo_png)


async def test_expired_uploads_are_swept(tmp_path: Path, photo_png: bytes, mask_png: bytes) -> None:
    clock = ManualClock()
    config = ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path, upload_ttl_s=60)
    async with (
        running(config, clock=clock) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        edit = image_edit_pb2_grpc.ImageEditStub(channel)
        upload = await edit.Upload(chunks(photo_png), metadata=metadata())
        clock.advance(61)
        assert await server.uploads.sweep() == 1
        assert not list((tmp_path / "objects").rglob(upload.upload_id))
        with pytest.raises(aio.AioRpcError) as gone:
            async for _ in edit.Inpaint(
                pb.InpaintRequest(
                    image=common_pb2.ImageInput(upload_id=upload.upload_id),
                    mask=common_pb2.ImageInput(data=mask_png),
                ),
                metadata=metadata(),
            ):
                pass
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
