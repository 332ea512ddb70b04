"""A running job's events on their way to the store: a burst of them is one write, and
those still unwritten when the job ends go in the write that records its end."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from retouch.server.jobs.events import Completed, Progressed
from retouch.server.jobs.live import LiveJob
from retouch.server.jobs.records import ResultRecord
from retouch.server.jobs.sqlite_store import SqliteJobStore
from retouch.v1 import image_edit_pb2 as pb

WAIT_S = 5.0
"""Bound on waiting for the recorder, far beyond its window; it never elapses when it works."""


class CountingStore(SqliteJobStore):
    """The embedded store, noting each batch of events it is asked to append."""

    def __init__(self, path: Path) -> None:
        opened = SqliteJobStore.open(path)
        super().__init__(opened._db)
        self.batches: list[list[int]] = []
        self.appended = asyncio.Event()

    async def append_events(self, job_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        await super().append_events(job_id, events)
        self.batches.append([seq for seq, _ in events])
        self.appended.set()


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "jobs.db")


def result() -> ResultRecord:
    return ResultRecord(
        result_id="res_1",
        job_id="job_1",
        owner="dev/user:1",
        object_key="results/dev/user:1/job_1.png",
        content_type="image/png",
        format="PNG",
        width=64,
        height=64,
        size_bytes=100,
        created_at=1.0,
        expires_at=0.0,
    )


def progress(live: LiveJob, fraction: float) -> None:
    live.publish(Progressed(fraction, "inpainting"))


def stages(payloads: Sequence[bytes]) -> list[str]:
    return [str(pb.JobEvent.FromString(p).WhichOneof("event")) for p in payloads]


async def test_a_burst_of_events_is_one_write_in_order(store: CountingStore) -> None:
    live = LiveJob("job_1", "dev/user:1", store)
    for fraction in (0.1, 0.2, 0.3):
        progress(live, fraction)
        # As a provider's progress arrives: each event in a turn of the loop of its own.
        for _ in range(3):
            await asyncio.sleep(0)
    # Followers here have them at once; the store once the window has passed.
    assert [event.seq for event in live.events] == [1, 2, 3]
    async with asyncio.timeout(WAIT_S):
        await store.appended.wait()
    assert store.batches == [[1, 2, 3]]
    assert len(await store.events_after("job_1", 0)) == 3


async def test_events_published_while_a_write_runs_go_in_the_next(store: CountingStore) -> None:
    live = LiveJob("job_1", "dev/user:1", store)
    progress(live, 0.1)
    async with asyncio.timeout(WAIT_S):
        await store.appended.wait()
        store.appended.clear()
        progress(live, 0.2)
        progress(live, 0.3)
        await store.appended.wait()
    assert store.batches == [[1], [2, 3]]


async def test_events_not_yet_written_go_with_the_jobs_end(store: CountingStore) -> None:
    # A window of no time: the write would run at the loop's next turn.
    live = LiveJob("job_1", "dev/user:1", store, record_window_s=0.0)
    progress(live, 0.1)
    progress(live, 0.5)
    live.publish(Completed(result(), 7, 3, 12))
    await live.writes_done()
    closing = live.begin_settling(succeeded=True)
    assert [seq for seq, _ in closing] == [1, 2, 3]
    assert stages([payload for _, payload in closing]) == ["progress", "progress", "completed"]
    for _ in range(3):
        await asyncio.sleep(0)  # turns of the loop, in which the write would have run
    assert store.batches == []


async def test_a_failed_job_ends_with_its_unwritten_events_but_no_completed(
    store: CountingStore,
) -> None:
    live = LiveJob("job_1", "dev/user:1", store)
    progress(live, 0.1)
    live.publish(Completed(result(), 7, 3, 12))
    await live.writes_done()
    closing = live.begin_settling(succeeded=False)
    assert [seq for seq, _ in closing] == [1]


async def test_settling_waits_for_the_write_under_way(store: CountingStore) -> None:
    live = LiveJob("job_1", "dev/user:1", store)
    progress(live, 0.1)
    async with asyncio.timeout(WAIT_S):
        await store.appended.wait()
    progress(live, 0.2)  # arrives after the write: waits for the window or the end
    await live.writes_done()
    assert [seq for seq, _ in live.begin_settling(succeeded=True)] == [2]
    assert store.batches == [[1]]


class FlakyStore(CountingStore):
    """The embedded store, refusing its first ``failures`` appends as a database that is
    away would."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.failed = asyncio.Event()

    async def append_events(self, job_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        if self.failures > 0:
            self.failures -= 1
            self.failed.set()
            raise ConnectionRefusedError("the database is away")
        await super().append_events(job_id, events)


async def recorded_seqs(store: CountingStore) -> list[int]:
    return [pb.JobEvent.FromString(p).seq for p in await store.events_after("job_1", 0)]


async def test_a_failed_write_is_retried_ahead_of_newer_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(tmp_path / "jobs.db", failures=3)
    live = LiveJob("job_1", "dev/user:1", store)
    progress(live, 0.1)
    async with asyncio.timeout(WAIT_S):
        await store.failed.wait()
        progress(live, 0.2)
        progress(live, 0.3)
        await store.appended.wait()
    assert store.batches == [[1, 2, 3]]
    assert await recorded_seqs(store) == [1, 2, 3]
    warnings = [r for r in caplog.records if r.name == "retouch.server.jobs.live"]
    assert len(warnings) == 1
    assert "ConnectionRefusedError" in warnings[0].getMessage()


async def test_events_of_a_failed_write_go_with_the_jobs_end(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "jobs.db", failures=1)
    live = LiveJob("job_1", "dev/user:1", store)
    progress(live, 0.1)
    async with asyncio.timeout(WAIT_S):
        await store.failed.wait()
    progress(live, 0.2)
    live.publish(Completed(result(), 7, 3, 12))
    await live.writes_done()  # raises nothing: the failure was the recorder's to handle
    closing = live.begin_settling(succeeded=True)
    assert [seq for seq, _ in closing] == [1, 2, 3]
    for _ in range(3):
        await asyncio.sleep(0)  # turns of the loop, in which a retry would have run
    assert store.batches == []
