"""``result_url`` in Completed and GetJob: downloaded over real HTTP, from this
server's signed route on the embedded defaults and as an S3 presigned URL on S3; a
wrong, expired or tampered link is a 404 that says nothing more."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from grpc import aio

from retouch.server.app import RunningServer, running
from retouch.server.clock import ManualClock
from retouch.server.config import DEV_TENANT, ServerConfig
from retouch.server.policy import Plan, PlanBook
from retouch.v1 import common_pb2, image_edit_pb2_grpc
from retouch.v1 import image_edit_pb2 as pb
from tests.conftest import OTHER_KEY, OTHER_TENANT
from tests.helpers import metadata, read_all


@dataclass
class Served:
    server: RunningServer
    edit: image_edit_pb2_grpc.ImageEditAsyncStub


@contextlib.asynccontextmanager
async def serve(config: ServerConfig, clock: ManualClock | None = None) -> AsyncIterator[Served]:
    async with (
        running(config, clock=clock) as server,
        aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield Served(server, image_edit_pb2_grpc.ImageEditStub(channel))


def embedded(tmp_path: Path, **overrides: object) -> ServerConfig:
    settings: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "data_dir": tmp_path / "data",
        "environment": "test",
        "tenants": (DEV_TENANT, OTHER_TENANT),
    }
    return ServerConfig(**(settings | overrides))  # type: ignore[arg-type]


async def completed(
    edit: image_edit_pb2_grpc.ImageEditAsyncStub, photo_png: bytes, mask_png: bytes, key: str = ""
) -> pb.JobEvent:
    """The Completed event of one Inpaint."""
    request = pb.InpaintRequest(
        image=common_pb2.ImageInput(data=photo_png), mask=common_pb2.ImageInput(data=mask_png)
    )
    events = await read_all(edit.Inpaint(request, metadata=metadata(key) if key else metadata()))
    assert events[-1].HasField("completed")
    return events[-1]


async def download(edit: image_edit_pb2_grpc.ImageEditAsyncStub, result_id: str) -> bytes:
    chunks = edit.DownloadResult(pb.DownloadResultRequest(result_id=result_id), metadata=metadata())
    return b"".join([chunk.data async for chunk in chunks])


async def fetch(url: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return answer.status, await answer.read(), answer.headers.get("Content-Type", "")


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


async def test_result_url_downloads_the_result_over_http(
    tmp_path: Path, photo_png: bytes, mask_png: bytes
) -> None:
    async with serve(embedded(tmp_path)) as served:
        event = await completed(served.edit, photo_png, mask_png)
        done = event.completed
        assert done.result_url.startswith(f"http://127.0.0.1:{served.server.results_http_port}/")
        status, body, content_type = await fetch(done.result_url)
        assert status == 200
        assert body == await download(served.edit, done.result_id)
        assert content_type == "image/png"
        job = await served.edit.GetJob(pb.GetJobRequest(job_id=event.job_id), metadata=metadata())
        assert job.result_url
        assert (await fetch(job.result_url))[1] == body


async def test_a_watch_replay_carries_a_fresh_result_url(
    tmp_path: Path, photo_png: bytes, mask_png: bytes
) -> None:
    clock = ManualClock()
    async with serve(embedded(tmp_path), clock) as served:
        request = pb.InpaintRequest(
            image=common_pb2.ImageInput(data=photo_png), mask=common_pb2.ImageInput(data=mask_png)
        )
        events = await read_all(served.edit.Inpaint(request, metadata=metadata()))
        first_url = events[-1].completed.result_url
        clock.advance(3600)  # the first link has expired by now
        assert (await fetch(first_url))[0] == 404
        replayed = await read_all(
            served.edit.WatchJob(pb.WatchJobRequest(job_id=events[0].job_id), metadata=metadata())
        )
        fresh = replayed[-1].completed.result_url
        assert fresh != first_url
        assert (await fetch(fresh))[0] == 200
        job = await served.edit.GetJob(
            pb.GetJobRequest(job_id=events[0].job_id), metadata=metadata()
        )
        assert (await fetch(job.result_url))[0] == 200


async def test_wrong_expired_or_tampered_links_are_the_same_404(
    tmp_path: Path, photo_png: bytes, mask_png: bytes
) -> None:
    clock = ManualClock()
    async with serve(embedded(tmp_path, result_url_expiry_s=60), clock) as served:
        mine = (await completed(served.edit, photo_png, mask_png)).completed
        theirs = (await completed(served.edit, photo_png, mask_png, key=OTHER_KEY)).completed
        signature = parse_qs(urlsplit(mine.result_url).query)["signature"][0]
        flipped = ("1" if signature[0] == "0" else "0") + signature[1:]
        expires = parse_qs(urlsplit(mine.result_url).query)["expires"][0]
        wrong = [
            with_query(mine.result_url, signature=flipped),
            with_query(mine.result_url, signature=""),
            with_query(mine.result_url, expires=str(int(expires) + 3600)),  # extended
            mine.result_url.replace(mine.result_id, theirs.result_id),  # another owner's
            mine.result_url.replace(mine.result_id, "res_does_not_exist"),
            mine.result_url.split("?")[0],
        ]
        answers = [await fetch(url) for url in wrong]
        assert {(status, body) for status, body, _ in answers} == {(404, b"not found\n")}
        assert (await fetch(mine.result_url))[0] == 200
        clock.advance(61)
        assert (await fetch(mine.result_url))[:2] == (404, b"not found\n")


async def test_links_survive_a_restart_on_the_same_data_dir(
    tmp_path: Path, photo_png: bytes, mask_png: bytes
) -> None:
    async with serve(embedded(tmp_path, results_http_listen="127.0.0.1:0")) as served:
        done = (await completed(served.edit, photo_png, mask_png)).completed
        port = served.server.results_http_port
    key_file = tmp_path / "data" / "result-url.key"
    assert key_file.stat().st_mode & 0o077 == 0, "the key is readable by its owner only"
    async with serve(embedded(tmp_path, results_http_listen=f"127.0.0.1:{port}")) as served:
        assert (await fetch(done.result_url))[0] == 200


async def test_result_urls_can_be_turned_off(
    tmp_path: Path, photo_png: bytes, mask_png: bytes
) -> None:
    async with serve(embedded(tmp_path, results_http_listen="off")) as served:
        assert served.server.results_http is None
        done = (await completed(served.edit, photo_png, mask_png)).completed
        assert done.result_url == ""


async def test_on_s3_result_url_is_presigned(
    tmp_path: Path, s3_url: str, photo_png: bytes, mask_png: bytes
) -> None:
    async with serve(embedded(tmp_path, object_store=s3_url)) as served:
        assert served.server.results_http is None, "no HTTP route: S3 serves the bytes"
        done = (await completed(served.edit, photo_png, mask_png)).completed
        assert "X-Amz-Signature=" in done.result_url
        assert "X-Amz-Expires=900" in done.result_url
        status, body, content_type = await fetch(done.result_url)
        assert status == 200
        assert content_type == "image/png"
        assert body == await download(served.edit, done.result_id)


@pytest.mark.parametrize("listen", ["127.0.0.1:50051", "127.0.0.1:0"])
def test_the_result_route_listens_beside_grpc_by_default(listen: str, tmp_path: Path) -> None:
    config = ServerConfig(listen=listen, data_dir=tmp_path)
    expected = "127.0.0.1:50052" if listen.endswith(":50051") else "127.0.0.1:0"
    assert config.results_http_address == expected


async def test_a_taken_default_result_port_falls_back_to_a_free_one(
    tmp_path: Path, photo_png: bytes, mask_png: bytes
) -> None:
    grpc_port, taken = _free_port_with_next_taken()
    with taken:
        config = embedded(tmp_path, listen=f"127.0.0.1:{grpc_port}")
        async with serve(config) as served:
            assert served.server.results_http_port not in (0, grpc_port + 1)
            done = (await completed(served.edit, photo_png, mask_png)).completed
            assert (await fetch(done.result_url))[0] == 200


@pytest.mark.parametrize("backend", ["file", "s3"])
async def test_retention_deletes_results_on_every_store_and_their_links_die(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, photo_png: bytes, mask_png: bytes
) -> None:
    clock = ManualClock()
    store = {"object_store": request.getfixturevalue("s3_url")} if backend == "s3" else {}
    plans = PlanBook({"short": Plan("short", retention_days=2)})
    tenants = (dataclasses.replace(DEV_TENANT, default_plan="short"),)
    config = embedded(tmp_path, plans=plans, tenants=tenants, **store)
    async with serve(config, clock) as served:
        done = (await completed(served.edit, photo_png, mask_png)).completed
        result = await served.server.store.get_result(done.result_id)
        assert result is not None
        assert await served.server.objects.exists(result.object_key)
        clock.advance(2 * 86_400 + 1)
        assert await served.server.retention.sweep() == 1
        assert not await served.server.objects.exists(result.object_key)
        if backend == "file":
            assert (await fetch(done.result_url))[:2] == (404, b"not found\n")
        else:
            assert (await fetch(done.result_url))[0] == 404  # S3's own NoSuchKey


def _free_port_with_next_taken() -> tuple[int, socket.socket]:
    """A port that was free a moment ago, and a listening socket holding the one after it.

    Both are probed, so the gRPC port is not one another test or engine holds."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        taken = socket.socket()
        try:
            taken.bind(("127.0.0.1", port + 1))
        except (OSError, OverflowError):  # held by someone else, or past 65535
            taken.close()
            continue
        taken.listen()
        return port, taken
