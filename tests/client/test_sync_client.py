"""The blocking Client: the same calls as AsyncClient, from plain synchronous code.

The server runs on the test's event loop, so each test drives the blocking client from a
worker thread, as a synchronous program would from its main thread.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from retouch.client import (
    Accepted,
    AsyncClient,
    Client,
    Completed,
    InvalidArgument,
    JobState,
    NotFound,
    Progress,
    SyncResult,
)
from retouch.server.config import DEV_API_KEY
from tests.client.fakes import Sleeps
from tests.helpers import decode_png, png, square_mask


async def test_a_blocking_edit_yields_events_and_saves_its_result(
    target: str, photo_file: Path, mask_file: Path, out_dir: Path
) -> None:
    def work() -> tuple[list[object], SyncResult, Path, list[Progress]]:
        progress: list[Progress] = []
        with Client(target, api_key=DEV_API_KEY, subject="user:42") as client:
            job = client.inpaint(photo_file, mask=mask_file, on_progress=progress.append)
            events: list[object] = list(job)
            result = job.result()
            return events, result, result.save(out_dir / "fixed.png"), progress

    events, result, saved, progress = await asyncio.to_thread(work)

    assert isinstance(events[0], Accepted)
    assert isinstance(events[-1], Completed)
    assert progress == [e for e in events if isinstance(e, Progress)]
    assert result.result_id == events[-1].result_id
    assert decode_png(await asyncio.to_thread(saved.read_bytes)).shape == (256, 256, 3)


async def test_blocking_calls_download_list_and_chain(
    target: str, photo_png: bytes, mask_png: bytes
) -> None:
    def work() -> tuple[bytes, SyncResult, JobState | None, bytes]:
        with Client(target, api_key=DEV_API_KEY) as client:
            first = client.inpaint(photo_png, mask=mask_png).result()
            chunks = b"".join(client.download(first.result_id))
            bigger = client.enhance(first, upscale=2, inline=True).result()
            state = client.list_jobs(limit=1)[0].state
            return chunks, bigger, state, first.read()

    chunks, bigger, state, read = await asyncio.to_thread(work)

    assert chunks == read
    assert (bigger.image.width, bigger.image.height) == (512, 512)
    assert bigger.data is not None
    assert state is JobState.SUCCEEDED


async def test_blocking_calls_raise_the_same_errors(target: str, photo_png: bytes) -> None:
    bad_mask = png(square_mask((10, 10), (0, 0, 5, 5)))

    def work() -> None:
        with Client(target, api_key=DEV_API_KEY) as client:
            stranger = client.with_subject("guest:someone")
            with pytest.raises(InvalidArgument) as raised:
                client.inpaint(photo_png, mask=bad_mask).result()
            assert raised.value.field_violations[0].field == "mask"
            with pytest.raises(NotFound):
                stranger.get_job("job_nope")
            stranger.close()  # leaves the shared channel and thread running
            assert client.providers()

    await asyncio.to_thread(work)


async def test_a_blocking_client_passes_its_settings_through(target: str) -> None:
    sleeps = Sleeps()

    def work() -> str | None:
        with Client(target, api_key=DEV_API_KEY, subject="user:1", sleep=sleeps) as client:
            return client.with_subject("user:2").subject

    assert await asyncio.to_thread(work) == "user:2"


def test_the_blocking_client_mirrors_the_async_one() -> None:
    shared = [
        name
        for name, member in inspect.getmembers(AsyncClient)
        if not name.startswith("_") and callable(member)
    ]
    for name in shared:
        blocking = inspect.signature(getattr(Client, name)).parameters
        original = inspect.signature(getattr(AsyncClient, name)).parameters
        assert list(blocking) == list(original), name
    assert inspect.signature(Client).parameters == inspect.signature(AsyncClient).parameters
