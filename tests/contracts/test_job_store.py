"""The JobStore contract, over every backend, with races across two connections."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import pytest

from retouch.server.database.backends import open_database
from retouch.server.jobs import JobRecord, JobState, ResultRecord, UploadRecord
from retouch.server.jobs.store import JobStore, LeaseRenewal
from tests.contracts.conftest import Backend
from tests.engines.postgres import PostgresServer, drop_listeners, listeners_cut

OWNER = "dev/user:1"


def job(job_id: str, request_id: str = "", **changes: object) -> JobRecord:
    record = JobRecord(
        job_id=job_id,
        owner=OWNER,
        subject="user:1",
        request_id=request_id,
        fingerprint="f",
        operation="inpaint",
        state=JobState.RUNNING,
        provider="opencv",
        model="telea",
        seed=7,
        created_at=100.0,
        updated_at=100.0,
        replica_id="replica-a",
        lease_until=130.0,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def failed(record: JobRecord, message: str = "lease expired") -> JobRecord:
    return dataclasses.replace(
        record, state=JobState.FAILED, error_code="UNAVAILABLE", error_message=message
    )


async def two_stores(backend: Backend) -> tuple[JobStore, JobStore]:
    return (await backend.open()).jobs, (await backend.open()).jobs


async def test_a_job_reads_back_as_written(backend: Backend) -> None:
    store = (await backend.open()).jobs
    written = job("job_1", deadline_at=160.5, final_status=b"\x00\x01")
    assert await store.create_or_get(written) == (written, True)
    assert await store.get_job("job_1") == written
    assert await store.get_job("job_missing") is None
    assert await store.unfinished_jobs() == [written]


@pytest.mark.parametrize("seed", [0, 2**63 - 1, 2**63, 2**64 - 1])
async def test_every_uint64_seed_reads_back_unchanged(backend: Backend, seed: int) -> None:
    store = (await backend.open()).jobs
    written = job("job_1", seed=seed)
    assert await store.create_or_get(written) == (written, True)
    assert await store.update_job(job("job_1", seed=seed, provider="patchmatch"))
    assert await store.finish(failed(job("job_1", seed=seed)))
    stored = await store.get_job("job_1")
    assert stored is not None
    assert stored.seed == seed


async def test_create_or_get_makes_one_job_per_owner_and_request_id(backend: Backend) -> None:
    store = (await backend.open()).jobs
    first, created = await store.create_or_get(job("job_1", "req"))
    again, created_again = await store.create_or_get(job("job_2", "req", fingerprint="g"))
    assert (created, created_again) == (True, False)
    assert again == first
    other_owner, created_other = await store.create_or_get(job("job_3", "req", owner="acme/u"))
    assert created_other
    assert other_owner.job_id == "job_3"
    assert (await store.create_or_get(job("job_4")))[1]
    assert (await store.create_or_get(job("job_5")))[1]  # no request_id: never a duplicate
    assert await store.find_by_request(OWNER, "req") == first


async def test_concurrent_duplicates_on_two_connections_make_one_job(backend: Backend) -> None:
    stores = await two_stores(backend)
    outcomes = await asyncio.gather(
        *(stores[i % 2].create_or_get(job(f"job_{i}", "same")) for i in range(30))
    )
    assert sum(created for _, created in outcomes) == 1
    assert len({stored.job_id for stored, _ in outcomes}) == 1
    assert len(await stores[0].list_jobs(OWNER, state=None, before_id=None, limit=100)) == 1


async def test_finish_is_a_compare_and_set_with_one_winner(backend: Backend) -> None:
    first, second = await two_stores(backend)
    await first.create_or_get(job("job_1"))
    succeeded = dataclasses.replace(job("job_1"), state=JobState.SUCCEEDED, result_id="res_1")
    won = await asyncio.gather(first.finish(failed(job("job_1"))), second.finish(succeeded))
    assert sorted(won) == [False, True]
    stored = await second.get_job("job_1")
    assert stored is not None
    assert stored.state is (JobState.FAILED if won[0] else JobState.SUCCEEDED)
    assert not await first.finish(succeeded)
    assert await first.get_job("job_1") == stored


async def test_update_job_never_overwrites_a_terminal_row(backend: Backend) -> None:
    store = (await backend.open()).jobs
    await store.create_or_get(job("job_1"))
    assert await store.update_job(job("job_1", provider="patchmatch", model="pm"))
    assert (await store.get_job("job_1")) == job("job_1", provider="patchmatch", model="pm")
    assert await store.finish(failed(job("job_1", provider="patchmatch")))
    assert not await store.update_job(job("job_1", provider="other"))
    stored = await store.get_job("job_1")
    assert stored is not None
    assert (stored.state, stored.provider) == (JobState.FAILED, "patchmatch")
    with pytest.raises(ValueError, match="terminal"):
        await store.update_job(failed(job("job_1")))
    with pytest.raises(ValueError, match="terminal"):
        await store.finish(job("job_1"))


async def test_leases_renew_for_their_replica_and_expire(backend: Backend) -> None:
    store = (await backend.open()).jobs
    await store.create_or_get(job("job_a"))
    await store.create_or_get(job("job_b", replica_id="replica-b"))
    await store.create_or_get(job("job_done"))
    await store.finish(failed(job("job_done")))
    renewal = await store.renew_leases("replica-a", ["job_a", "job_b", "job_done"], 200.0)
    assert renewal == LeaseRenewal(renewed=frozenset({"job_a"}), cancel_requested=frozenset())
    expired = {j.job_id: j.lease_until for j in await store.expired_jobs(150.0)}
    assert expired == {"job_b": 130.0}  # job_a renewed; job_b is another replica's
    assert {j.job_id for j in await store.expired_jobs(201.0)} == {"job_a", "job_b"}
    assert await store.renew_leases("replica-a", [], 300.0) == LeaseRenewal(
        frozenset(), frozenset()
    )


async def test_the_renewal_names_the_jobs_whose_cancel_was_requested(backend: Backend) -> None:
    """The heartbeat learns of a cancel request with no wake-up at all, on any backend."""
    runner, caller = await two_stores(backend)
    for job_id in ("job_a", "job_b"):
        await runner.create_or_get(job(job_id))
    assert await caller.request_cancel("job_b")
    renewal = await runner.renew_leases("replica-a", ["job_a", "job_b"], 200.0)
    assert renewal.renewed == {"job_a", "job_b"}
    assert renewal.cancel_requested == {"job_b"}


async def test_an_expired_job_is_taken_over_once_and_its_old_holder_is_fenced_off(
    backend: Backend,
) -> None:
    holder, first, second = (await backend.open()).jobs, *await two_stores(backend)
    await holder.create_or_get(job("job_1"))  # replica-a's, leased until 130
    assert not await first.take_over("job_1", "replica-b", now=129.0, until=200.0)
    taken = await asyncio.gather(
        first.take_over("job_1", "replica-b", now=131.0, until=200.0),
        second.take_over("job_1", "replica-c", now=131.0, until=200.0),
    )
    assert sorted(taken) == [False, True]
    taker = "replica-b" if taken[0] else "replica-c"
    # The stalled holder wakes up: it can neither keep, change nor succeed the job.
    assert (await holder.renew_leases("replica-a", ["job_1"], 300.0)).renewed == set()
    assert not await holder.update_job(job("job_1", lease_until=300.0))
    succeeded = dataclasses.replace(job("job_1"), state=JobState.SUCCEEDED, result_id="res_1")
    assert not await holder.finish(succeeded, events=[(1, b"completed")])
    assert not await holder.finish(failed(job("job_1")))
    stored = await holder.get_job("job_1")
    assert stored is not None
    assert (stored.state, stored.replica_id, stored.lease_until) == (
        JobState.RUNNING,
        taker,
        200.0,
    )
    assert await holder.events_after("job_1", 0) == []
    # The taker ends it, and the record still names the replica that ran it.
    assert await first.finish(failed(job("job_1")), holder=taker)
    stored = await holder.get_job("job_1")
    assert stored is not None
    assert (stored.state, stored.replica_id) == (JobState.FAILED, "replica-a")
    assert not await second.take_over("job_1", "replica-c", now=999.0, until=1000.0)


async def test_a_renewed_lease_cannot_be_taken_over(backend: Backend) -> None:
    holder, other = await two_stores(backend)
    await holder.create_or_get(job("job_1"))
    seen = await other.expired_jobs(131.0)
    assert [j.job_id for j in seen] == ["job_1"]
    await holder.renew_leases("replica-a", ["job_1"], 200.0)  # between the read and the take
    assert not await other.take_over("job_1", "replica-b", now=131.0, until=300.0)
    assert await holder.update_job(job("job_1", lease_until=200.0, provider="fallback"))


async def test_finish_records_its_last_events_only_when_it_wins(backend: Backend) -> None:
    writer = (await backend.open()).jobs
    watcher = backend.peer(writer, (await backend.open()).jobs)
    await writer.create_or_get(job("job_1"))
    await writer.append_event("job_1", 1, b"accepted")
    succeeded = dataclasses.replace(job("job_1"), state=JobState.SUCCEEDED, last_seq=2)
    async with (
        asyncio.timeout(60),  # a guard against a hang, not a timed assertion
        contextlib.aclosing(watcher.watch_events("job_1")) as changes,
    ):
        await anext(changes)
        assert await writer.finish(succeeded, events=[(2, b"completed")])
        await anext(changes)
        stored = await watcher.get_job("job_1")
        assert stored is not None
        assert stored.state is JobState.SUCCEEDED
        # Read after the state: the end and its last event were one write.
        assert await watcher.events_after("job_1", 0) == [b"accepted", b"completed"]
    assert not await writer.finish(succeeded, events=[(3, b"again")])
    assert await writer.events_after("job_1", 0) == [b"accepted", b"completed"]


async def test_an_expired_job_is_failed_by_one_replica_only(backend: Backend) -> None:
    first, second = await two_stores(backend)
    await first.create_or_get(job("job_1"))
    seen = [await first.expired_jobs(131.0), await second.expired_jobs(131.0)]
    assert [[j.job_id for j in s] for s in seen] == [["job_1"], ["job_1"]]
    won = await asyncio.gather(first.finish(failed(seen[0][0])), second.finish(failed(seen[1][0])))
    assert sorted(won) == [False, True]
    assert await first.expired_jobs(131.0) == []


async def test_events_are_recorded_in_order(backend: Backend) -> None:
    store = (await backend.open()).jobs
    await store.create_or_get(job("job_1"))
    await store.append_event("job_1", 1, b"one")
    await store.append_events("job_1", [(2, b"two"), (3, b"three")])
    await store.append_events("job_1", [])
    assert await store.events_after("job_1", 0) == [b"one", b"two", b"three"]
    assert await store.events_after("job_1", 2) == [b"three"]
    assert await store.events_after("job_other", 0) == []


async def test_a_running_job_names_its_last_recorded_event(backend: Backend) -> None:
    writer, reader = await two_stores(backend)
    await writer.create_or_get(job("job_1"))
    await writer.append_event("job_1", 1, b"one")
    await writer.append_events("job_1", [(2, b"two"), (3, b"three")])

    recorded = await reader.get_job("job_1")
    assert recorded is not None
    assert recorded.last_seq == 3
    # So a replica that fails the job once its lease expires records where it stopped.
    assert [j.last_seq for j in await reader.expired_jobs(131.0)] == [3]


async def test_a_retried_write_of_events_records_each_once(backend: Backend) -> None:
    # The first write went in, but its caller saw a timeout and tries again.
    store = (await backend.open()).jobs
    await store.create_or_get(job("job_1"))
    await store.append_events("job_1", [(1, b"one"), (2, b"two")])
    await store.append_events("job_1", [(1, b"one"), (2, b"two"), (3, b"three")])
    assert await store.finish(failed(job("job_1")), events=[(3, b"three"), (4, b"four")])
    assert await store.events_after("job_1", 0) == [b"one", b"two", b"three", b"four"]


async def test_a_refunded_success_reads_as_charging_nothing(backend: Backend) -> None:
    store = (await backend.open()).jobs
    for job_id in ("job_ok", "job_failed"):
        await store.create_or_get(job(job_id, cost_credits=5))
    assert await store.finish(job("job_ok", state=JobState.SUCCEEDED, cost_credits=5))
    assert await store.finish(failed(job("job_failed", cost_credits=5)))
    running = job("job_running", cost_credits=5)
    await store.create_or_get(running)

    for job_id in ("job_ok", "job_failed", "job_running"):
        await store.clear_charge(job_id)

    records = [await store.get_job(j) for j in ("job_ok", "job_failed", "job_running")]
    assert [r.cost_credits if r else None for r in records] == [0, 5, 5]


async def test_a_watcher_wakes_for_each_event_and_for_the_end(backend: Backend) -> None:
    writer = (await backend.open()).jobs
    watcher = backend.peer(writer, (await backend.open()).jobs)
    await writer.create_or_get(job("job_1"))
    seen: list[bytes] = []
    woken = asyncio.Event()

    async def watch() -> JobState:
        async with contextlib.aclosing(watcher.watch_events("job_1")) as changes:
            async for _ in changes:
                seen.extend(await watcher.events_after("job_1", len(seen)))
                woken.set()
                record = await watcher.get_job("job_1")
                assert record is not None
                if record.state.terminal:
                    return record.state
        raise AssertionError("watch_events ended by itself")

    watching = asyncio.create_task(watch())
    await woken.wait()  # subscribed: the first yield comes after the subscription
    for seq in (1, 2, 3):
        woken.clear()
        await writer.append_event("job_1", seq, f"e{seq}".encode())
        await woken.wait()
    await writer.finish(dataclasses.replace(job("job_1"), state=JobState.SUCCEEDED))
    assert await watching is JobState.SUCCEEDED
    assert seen == [b"e1", b"e2", b"e3"]


async def test_a_cancel_request_reaches_every_replica(backend: Backend) -> None:
    runner = (await backend.open()).jobs
    caller = backend.peer(runner, (await backend.open()).jobs)
    await caller.create_or_get(job("job_1"))
    requests = runner.cancel_requests()
    listening = asyncio.ensure_future(anext(requests))
    await asyncio.sleep(0)  # let the stream subscribe before the request is made
    assert await caller.request_cancel("job_1")
    assert await listening == "job_1"
    await requests.aclose()
    stored = await runner.get_job("job_1")
    assert stored is not None
    assert stored.cancel_requested
    assert await runner.update_job(job("job_1", provider="fallback"))
    stored = await runner.get_job("job_1")
    assert stored is not None
    assert stored.cancel_requested  # a stale record cannot clear it
    await runner.finish(failed(stored))
    assert not await caller.request_cancel("job_1")
    assert not await caller.request_cancel("job_missing")


async def test_jobs_list_newest_first_by_state_and_page(backend: Backend) -> None:
    store = (await backend.open()).jobs
    for i in range(5):
        await store.create_or_get(job(f"job_{i}"))
    await store.finish(failed(job("job_3")))
    page = await store.list_jobs(OWNER, state=None, before_id=None, limit=2)
    assert [j.job_id for j in page] == ["job_4", "job_3"]
    rest = await store.list_jobs(OWNER, state=None, before_id="job_3", limit=10)
    assert [j.job_id for j in rest] == ["job_2", "job_1", "job_0"]
    failed_only = await store.list_jobs(OWNER, state=JobState.FAILED, before_id=None, limit=10)
    assert [j.job_id for j in failed_only] == ["job_3"]
    assert await store.list_jobs("acme/u", state=None, before_id=None, limit=10) == []


async def test_results_and_uploads_expire(backend: Backend) -> None:
    store = (await backend.open()).jobs
    kept = ResultRecord("res_k", "job_1", OWNER, "k.png", "image/png", "PNG", 4, 3, 99, 1.0)
    ending = dataclasses.replace(kept, result_id="res_e", object_key="e.png", expires_at=50.0)
    for result in (kept, ending):
        await store.add_result(result)
    assert await store.get_result("res_e") == ending
    assert await store.expired_results(49.0) == []
    assert await store.expired_results(50.0) == [ending]
    await store.delete_result("res_e")
    assert await store.get_result("res_e") is None
    upload = UploadRecord("upl_1", OWNER, "u.png", 10, "ab" * 32, "image/png", 60.0)
    await store.add_upload(upload)
    assert await store.get_upload("upl_1") == upload
    assert await store.expired_uploads(59.0) == []
    assert await store.expired_uploads(60.0) == [upload]
    await store.delete_upload("upl_1")
    assert await store.get_upload("upl_1") is None


async def test_watchers_are_woken_again_after_the_listen_connection_drops(
    postgres: PostgresServer,
) -> None:
    """PostgreSQL only: SQLite wakes watchers in process, with no connection to lose."""
    url = postgres.new_database()
    database = await open_database(url, pool_size=2)
    try:
        store = database.jobs
        await store.create_or_get(job("job_1"))
        async with (
            asyncio.timeout(60),  # a guard against a hang, not a timed assertion
            contextlib.aclosing(store.watch_events("job_1")) as changes,
        ):
            await anext(changes)
            assert await drop_listeners(url) == 1
            await anext(changes)  # woken by the reconnect: notifications may have been lost
            await store.append_event("job_1", 1, b"after")
            await anext(changes)
            assert await store.events_after("job_1", 0) == [b"after"]
    finally:
        await database.close()


async def test_a_cancel_requested_while_the_listen_connection_is_down_arrives_once_it_is_back(
    postgres: PostgresServer,
) -> None:
    """PostgreSQL only: its NOTIFY is lost with the connection; SQLite has none to lose."""
    url = postgres.new_database()
    runner_database = await open_database(url, pool_size=2)
    caller_database = await open_database(url, pool_size=2)
    runner, caller = runner_database.jobs, caller_database.jobs
    try:
        await runner.create_or_get(job("job_1"))
        async with (
            asyncio.timeout(60),  # a guard against a hang, not a timed assertion
            contextlib.aclosing(runner.cancel_requests()) as requests,
        ):
            listening = asyncio.ensure_future(anext(requests))
            await asyncio.sleep(0)  # let the stream subscribe before the request is made
            async with listeners_cut(url) as dropped:
                assert dropped == 2  # the runner's and the caller's
                # Through the caller's pool, while no LISTEN connection can hear it.
                assert await caller.request_cancel("job_1")
                assert not listening.done()
            # The runner's listener reconnects and repeats the pending request.
            assert await listening == "job_1"
    finally:
        await runner_database.close()
        await caller_database.close()
