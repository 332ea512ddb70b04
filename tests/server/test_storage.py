"""The object store contract, run over every backend, plus what is backend-specific."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path

import aiohttp
import grpc
import pytest

from retouch.server.storage import (
    FilesystemObjectStore,
    MemoryObjectStore,
    ObjectNotFound,
    ObjectStore,
    PresigningStore,
    StorageError,
    StorageUnavailable,
    open_store,
)
from retouch.server.storage.filesystem import _open_partial
from retouch.server.storage.s3 import PART_BYTES, S3Location, S3ObjectStore
from tests.engines.seaweed import FailingS3

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "results/../../outside",
    "results/./job.png",
    ".",
    "a//b",
    "a/",
    "a\\b",
    "..\\outside",
    "a\x00b",
    "a\nb",
    "x" * 1025,
]


@pytest.fixture(params=["memory", "filesystem", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    backend: ObjectStore
    if request.param == "memory":
        backend = MemoryObjectStore()
    elif request.param == "filesystem":
        backend = FilesystemObjectStore(tmp_path / "objects")
    else:
        backend = open_store(request.getfixturevalue("s3_url"))
    yield backend
    await backend.aclose()


async def collect(store: ObjectStore, key: str, chunk_size: int) -> list[bytes]:
    return [chunk async for chunk in store.iter_chunks(key, chunk_size)]


def files_under(root: Path) -> list[Path]:
    """Every file below ``root``, temporaries included."""
    return sorted(path for path in root.rglob("*") if path.is_file())


def open_descriptors() -> int | None:
    """How many files this process has open, where the OS tells."""
    fd_dir = Path("/proc/self/fd")
    return len(os.listdir(fd_dir)) if fd_dir.exists() else None


# --- the contract, for every backend --------------------------------------------------


def test_backends_implement_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


async def test_put_then_get_returns_the_same_bytes(store: ObjectStore) -> None:
    await store.put("results/acme/user:42/job-1.png", b"\x89PNG data", content_type="image/png")
    assert await store.get("results/acme/user:42/job-1.png") == b"\x89PNG data"
    assert await store.size("results/acme/user:42/job-1.png") == 9
    assert await store.exists("results/acme/user:42/job-1.png")


async def test_a_put_made_durable_later_is_readable_at_once(store: ObjectStore) -> None:
    await store.put("results/t/s/j.png", b"pixels", content_type="image/png", durable=False)
    assert await store.get("results/t/s/j.png") == b"pixels"
    await store.sync("results/t/s/j.png")
    assert await store.get("results/t/s/j.png") == b"pixels"
    with pytest.raises(ObjectNotFound):
        await store.sync("results/t/s/missing.png")


async def test_put_replaces_an_existing_object(store: ObjectStore) -> None:
    await store.put("k", b"first, and longer", content_type="text/plain")
    await store.put("k", b"second", content_type="text/plain")
    assert await store.get("k") == b"second"
    assert await store.size("k") == 6


async def test_empty_objects_are_objects(store: ObjectStore) -> None:
    await store.put("empty", b"", content_type="application/octet-stream")
    assert await store.exists("empty")
    assert await store.get("empty") == b""
    assert await store.size("empty") == 0
    assert await collect(store, "empty", 4) == []


@pytest.mark.parametrize("chunk_size", [1, 3, 10, 11, 1 << 20])
async def test_iter_chunks_reassembles_the_object(store: ObjectStore, chunk_size: int) -> None:
    data = bytes(range(10))
    await store.put("chunked", data, content_type="application/octet-stream")
    chunks = await collect(store, "chunked", chunk_size)
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks)
    assert len(chunks) == -(-len(data) // chunk_size)


async def test_iter_chunks_streams_a_result_sized_object(store: ObjectStore) -> None:
    data = os.urandom(1_300_000)
    await store.put("results/big.png", data, content_type="image/png")
    chunks = await collect(store, "results/big.png", 64 * 1024)
    assert len(chunks) == 20
    assert b"".join(chunks) == data


async def test_iter_chunks_refuses_a_non_positive_chunk_size(store: ObjectStore) -> None:
    await store.put("k", b"data", content_type="text/plain")
    with pytest.raises(ValueError, match="chunk_size"):
        await collect(store, "k", 0)


async def test_delete_removes_and_is_idempotent(store: ObjectStore) -> None:
    await store.put("uploads/u1", b"bytes", content_type="image/png")
    await store.delete("uploads/u1")
    assert not await store.exists("uploads/u1")
    await store.delete("uploads/u1")
    await store.delete("never/stored")


async def test_missing_objects_raise_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        await store.get("results/missing.png")
    assert caught.value.key == "results/missing.png"
    with pytest.raises(ObjectNotFound):
        await store.size("results/missing.png")
    with pytest.raises(ObjectNotFound):
        await collect(store, "results/missing.png", 1024)
    assert not await store.exists("results/missing.png")


async def test_a_key_prefix_is_not_an_object(store: ObjectStore) -> None:
    await store.put("results/acme/job.png", b"x", content_type="image/png")
    assert not await store.exists("results/acme")
    with pytest.raises(ObjectNotFound):
        await store.get("results/acme")
    with pytest.raises(ObjectNotFound):
        await store.size("results")
    with pytest.raises(ObjectNotFound):
        await collect(store, "results/acme", 8)
    with pytest.raises(ObjectNotFound):
        await store.get("results/acme/job.png/inner")
    await store.delete("results/acme")
    assert await store.get("results/acme/job.png") == b"x"


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_unsafe_keys_are_refused_by_every_method(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        await store.put(key, b"x", content_type="text/plain")
    with pytest.raises(ValueError, match="key"):
        await store.get(key)
    with pytest.raises(ValueError, match="key"):
        await collect(store, key, 8)
    with pytest.raises(ValueError, match="key"):
        await store.size(key)
    with pytest.raises(ValueError, match="key"):
        await store.delete(key)
    with pytest.raises(ValueError, match="key"):
        await store.exists(key)


async def test_unicode_and_punctuation_keys_work(store: ObjectStore) -> None:
    key = "results/tenant-a/user:Zoë@example.com/job_1.v2.webp"
    await store.put(key, b"w", content_type="image/webp")
    assert await store.get(key) == b"w"


async def test_concurrent_puts_of_one_key_leave_one_complete_object(store: ObjectStore) -> None:
    payloads = [bytes([n]) * (200_000 + n) for n in range(16)]
    await asyncio.gather(
        *(store.put("results/race.png", p, content_type="image/png") for p in payloads)
    )
    assert await store.get("results/race.png") in payloads
    assert await store.size("results/race.png") == len(await store.get("results/race.png"))


async def test_concurrent_puts_of_different_keys_all_land(store: ObjectStore) -> None:
    await asyncio.gather(
        *(store.put(f"many/{n}", str(n).encode(), content_type="text/plain") for n in range(20))
    )
    for n in range(20):
        assert await store.get(f"many/{n}") == str(n).encode()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class Interrupted(Exception):
    """Raised by a chunk source to stand for a client that went away mid-upload."""


async def failing_after(data: bytes, size: int) -> AsyncIterator[bytes]:
    async for piece in pieces(data, size):
        yield piece
    raise Interrupted


@pytest.mark.parametrize("length", [0, 5, 3 * 1024 * 1024])
async def test_put_stream_stores_what_the_chunks_yield(store: ObjectStore, length: int) -> None:
    data = os.urandom(length)
    size = await store.put_stream(
        "uploads/t/s/u1", pieces(data, 64 * 1024), content_type="image/png"
    )
    assert size == length
    assert await store.get("uploads/t/s/u1") == data
    assert await store.size("uploads/t/s/u1") == length


async def test_put_stream_of_many_parts_is_a_multipart_upload_that_reassembles(
    store: ObjectStore,
) -> None:
    # Over two S3 parts (8 MiB each), with chunks that do not divide the part size.
    data = os.urandom(2 * PART_BYTES + 12_345)
    assert await store.put_stream("uploads/big", pieces(data, 1_000_003), content_type="x") == len(
        data
    )
    assert b"".join(await collect(store, "uploads/big", 1 << 20)) == data


@pytest.mark.parametrize("length", [10, PART_BYTES + 10])
async def test_put_stream_that_fails_leaves_nothing_and_the_old_object(
    store: ObjectStore, length: int
) -> None:
    await store.put("uploads/kept", b"old", content_type="x")
    with pytest.raises(Interrupted):
        await store.put_stream("uploads/new", failing_after(b"n" * length, 4096), content_type="x")
    with pytest.raises(Interrupted):
        await store.put_stream("uploads/kept", failing_after(b"n" * length, 4096), content_type="x")
    assert not await store.exists("uploads/new")
    assert await store.get("uploads/kept") == b"old"
    await assert_no_partial_writes(store)


async def test_put_stream_cancelled_midway_leaves_nothing(store: ObjectStore) -> None:
    halfway = asyncio.Event()
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield os.urandom(PART_BYTES + 1)  # enough for a multipart upload to start
        halfway.set()
        await never.wait()
        yield b"never"

    writing = asyncio.create_task(store.put_stream("uploads/cut", stalls(), content_type="x"))
    await halfway.wait()
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert not await store.exists("uploads/cut")
    await assert_no_partial_writes(store)


async def assert_no_partial_writes(store: ObjectStore) -> None:
    """No temporary file (filesystem) or unfinished multipart upload (S3) is left."""
    if isinstance(store, FilesystemObjectStore):
        assert not [p for p in files_under(store.root) if p.name.endswith(".part")]
    if isinstance(store, S3ObjectStore):
        assert await unfinished_uploads(store) == []


async def unfinished_uploads(store: S3ObjectStore) -> list[str]:
    client = await store._open()
    listing = await client.list_multipart_uploads(
        Bucket=store.location.bucket, Prefix=store.location.prefix
    )
    return [upload.get("Key", "") for upload in listing.get("Uploads", [])]


async def test_delete_removes_what_a_crashed_write_left(store: ObjectStore, tmp_path: Path) -> None:
    if isinstance(store, FilesystemObjectStore):
        # A process killed mid-write leaves its temporary file beside the key.
        file, _temporary = _open_partial(store.root / "uploads" / "crashed")
        file.write(b"half an upload")
        file.close()
        assert [p.name for p in files_under(store.root)][-1].endswith(".part")
    elif isinstance(store, S3ObjectStore):
        client = await store._open()
        await client.create_multipart_upload(
            Bucket=store.location.bucket, Key=store.location.prefix + "uploads/crashed"
        )
        assert await unfinished_uploads(store) == [store.location.prefix + "uploads/crashed"]
    await store.delete("uploads/crashed")
    await assert_no_partial_writes(store)


# --- filesystem specifics -------------------------------------------------------------


async def test_filesystem_stores_one_file_per_key_and_no_temporaries(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path / "root")
    payloads = [bytes([n]) * 100_000 for n in range(8)]
    await asyncio.gather(*(store.put("a/b/c.png", p, content_type="image/png") for p in payloads))
    files = files_under(tmp_path / "root")
    assert files == [tmp_path / "root" / "a" / "b" / "c.png"]
    assert files[0].read_bytes() in payloads


async def test_filesystem_reader_finishes_on_the_object_it_started(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path, durable=False)
    await store.put("k", b"old" * 1000, content_type="text/plain")
    chunks = store.iter_chunks("k", 1000)
    first = await anext(chunks)
    await store.put("k", b"new" * 2000, content_type="text/plain")
    rest = [chunk async for chunk in chunks]
    assert first + b"".join(rest) == b"old" * 1000
    assert await store.get("k") == b"new" * 2000


async def test_filesystem_closes_an_abandoned_reader(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path)
    await store.put("k", b"x" * 100, content_type="text/plain")
    before = open_descriptors()
    chunks = store.iter_chunks("k", 10)
    assert isinstance(chunks, AsyncGenerator)
    assert await anext(chunks) == b"x" * 10
    await chunks.aclose()
    assert open_descriptors() == before


async def test_filesystem_key_that_runs_through_an_object_is_a_storage_error(
    tmp_path: Path,
) -> None:
    store = FilesystemObjectStore(tmp_path)
    await store.put("a", b"object", content_type="text/plain")
    with pytest.raises(StorageError, match="could not store 'a/b'"):
        await store.put("a/b", b"nested", content_type="text/plain")
    await store.put("dir/x", b"x", content_type="text/plain")
    with pytest.raises(StorageError):
        await store.put("dir", b"over a directory", content_type="text/plain")
    assert await store.get("a") == b"object"
    assert files_under(tmp_path) == [tmp_path / "a", tmp_path / "dir" / "x"]


def test_filesystem_creates_its_root(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path / "deep" / "root")
    assert store.root == (tmp_path / "deep" / "root").resolve()
    assert store.root.is_dir()


async def test_memory_store_keeps_the_content_type() -> None:
    store = MemoryObjectStore()
    await store.put("r.webp", b"w", content_type="image/webp")
    assert store.content_type("r.webp") == "image/webp"


# --- selection by URL -----------------------------------------------------------------


def test_open_store_memory_url() -> None:
    assert isinstance(open_store("memory://"), MemoryObjectStore)


def test_open_store_file_url_and_plain_path(tmp_path: Path) -> None:
    from_url = open_store(f"file://{tmp_path}/with%20space")
    assert isinstance(from_url, FilesystemObjectStore)
    assert from_url.root == tmp_path / "with space"
    localhost = open_store(f"file://localhost{tmp_path}")
    assert isinstance(localhost, FilesystemObjectStore)
    assert localhost.root == tmp_path
    plain = open_store(str(tmp_path / "plain"))
    assert isinstance(plain, FilesystemObjectStore)
    assert plain.root == tmp_path / "plain"


async def test_open_store_relative_path_is_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("data/objects")
    assert isinstance(store, FilesystemObjectStore)
    assert store.root == tmp_path / "data" / "objects"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("file://relative/path", "absolute"),
        ("file://otherhost/abs", "absolute"),
        ("s3://", "s3://bucket"),
        ("s3://bucket?endpoint=http://x", "unknown parameter"),
        ("s3://bucket?addressing_style=sideways", "addressing_style"),
        ("s3://bucket/../up", "key"),
        ("redis://localhost", "unknown storage URL scheme"),
    ],
)
def test_open_store_refuses_what_it_cannot_open(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        open_store(url)


# --- S3 specifics ---------------------------------------------------------------------


async def test_s3_presigned_url_downloads_over_plain_http(s3_url: str) -> None:
    async with aclosing(open_store(s3_url)) as store:
        assert isinstance(store, PresigningStore)
        await store.put("results/t/s/job.png", b"\x89PNG result", content_type="image/png")
        url = await store.presigned_url("results/t/s/job.png", 60)
    assert url.startswith("http://127.0.0.1:")
    # SeaweedFS without configured identities accepts any signature, so only the
    # download is checked here; the signing itself is botocore's.
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=60" in url
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "image/png"
        assert await answer.read() == b"\x89PNG result"


def test_only_s3_presigns(tmp_path: Path) -> None:
    assert not isinstance(MemoryObjectStore(), PresigningStore)
    assert not isinstance(FilesystemObjectStore(tmp_path), PresigningStore)


async def test_s3_throttling_is_unavailable_with_retry_after(failing_s3: FailingS3) -> None:
    async with aclosing(open_store(failing_s3.url)) as store:
        with pytest.raises(StorageUnavailable) as put:
            await store.put("results/x.png", b"x", content_type="image/png")
        with pytest.raises(StorageUnavailable):
            await store.get("results/x.png")
        with pytest.raises(StorageUnavailable):
            await store.put_stream("uploads/u", pieces(b"abc", 1), content_type="x")
    status = put.value.to_status()
    assert status.code == grpc.StatusCode.UNAVAILABLE
    assert put.value.retry_after == 7.0
    assert failing_s3.received, "the store never reached the server"


async def test_s3_unreachable_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = S3ObjectStore(
        S3Location.from_url(f"s3://bucket?endpoint_url=http://127.0.0.1:{port}&region=us-east-1"),
        max_attempts=1,
    )
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "k")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "s")
    async with aclosing(store):
        with pytest.raises(StorageUnavailable, match="unreachable"):
            await store.get("k")


async def test_a_closed_s3_store_refuses_work_instead_of_reopening(s3_url: str) -> None:
    store = open_store(s3_url)
    await store.put("results/x.png", b"x", content_type="image/png")
    await store.aclose()
    with pytest.raises(StorageUnavailable, match="closed"):
        await store.get("results/x.png")


def test_s3_url_parts() -> None:
    location = S3Location.from_url(
        "s3://media/retouch/prod?endpoint_url=https://r2.example&region=auto"
    )
    assert location == S3Location(
        bucket="media",
        prefix="retouch/prod/",
        endpoint_url="https://r2.example",
        region="auto",
        addressing_style="path",
    )
    assert S3Location.from_url("s3://media").addressing_style == "auto"
