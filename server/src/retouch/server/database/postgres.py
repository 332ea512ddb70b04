"""PostgreSQL connections: the pool, the LISTEN connection, and transactions with retry.

Cross-replica wake-ups use LISTEN/NOTIFY rather than Redis pub/sub: a ``pg_notify`` in
the same statement as the event's INSERT (or the job's final UPDATE) is delivered if and
only if that write commits, so a watcher that subscribed before reading can never miss
an event between the write and the wake-up; and it needs no engine beyond the database
that holds the events anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ..errors import Unavailable
from .signals import Signals

log = logging.getLogger(__name__)

T = TypeVar("T")

Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
"""A connection of its own or one borrowed from a pool."""

EVENTS_CHANNEL = "retouch_job_events"
"""NOTIFY channel whose payload is the id of a job with a new event or a new state."""
CANCELS_CHANNEL = "retouch_job_cancels"
"""NOTIFY channel whose payload is the id of a job whose cancellation was requested."""

TRANSACTION_ATTEMPTS = 5
_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)

RETRY_WHEN_UNREACHABLE_S = 1.0
CONNECTION_ERRORS = (
    OSError,  # refused or reset connections, and TimeoutError
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, cannot connect now
    asyncpg.TooManyConnectionsError,
    # A connection cut off mid-statement ("another operation is in progress").
    asyncpg.InternalClientError,
)
"""What asyncpg raises when PostgreSQL cannot be reached or cannot take the call now, as
opposed to an error in the statement."""


class DatabaseUnreachable(Unavailable):
    """PostgreSQL could not be reached, or not within the bound: UNAVAILABLE with reason
    ``DATABASE_UNAVAILABLE``, to retry shortly."""

    def __init__(self) -> None:
        super().__init__(
            "the database is unreachable, so the call could not be served; retry shortly",
            retry_after=RETRY_WHEN_UNREACHABLE_S,
            reason="DATABASE_UNAVAILABLE",
        )


async def create_pool(dsn: str, *, max_size: int) -> asyncpg.Pool:
    """A connection pool; a few connections stay open so a call never waits to connect."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min(2, max_size), max_size=max_size, timeout=10, command_timeout=30
    )
    assert pool is not None  # create_pool returns None only when told not to initialize
    return pool


class BoundedPool:
    """The stores' way to the pool: every use is bounded by ``timeout_s`` and a
    connection-level failure (:data:`CONNECTION_ERRORS`) becomes
    :class:`DatabaseUnreachable`, so callers get UNAVAILABLE and no one else needs to know
    asyncpg's errors. An outage is logged once as a warning, and its end once."""

    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float) -> None:
        self.raw = pool
        self.timeout_s = timeout_s
        self._unreachable = False

    async def run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """``work`` on a connection of the pool, within the bound."""
        try:
            async with asyncio.timeout(self.timeout_s), self.raw.acquire() as connection:
                result = await _terminated_if_cut_short(connection, work)
        except CONNECTION_ERRORS as exc:
            if not self._unreachable:
                self._unreachable = True
                log.warning("PostgreSQL is unreachable; calls fail UNAVAILABLE (%r)", exc)
            raise DatabaseUnreachable() from exc
        if self._unreachable:
            self._unreachable = False
            log.info("PostgreSQL is reachable again")
        return result

    async def execute(self, sql: str, *args: object) -> str:
        return await self.run(lambda db: db.execute(sql, *args))

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        return await self.run(lambda db: db.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: object) -> asyncpg.Record | None:
        return await self.run(lambda db: db.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: object) -> object:
        return await self.run(lambda db: db.fetchval(sql, *args))

    async def in_transaction(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one READ COMMITTED transaction, again if PostgreSQL aborts it
        for a deadlock or serialization failure (the ledger's lock order avoids both; this
        is the safety net, and every ``work`` must be safe to run again). Each attempt is
        bounded as :meth:`run` is."""

        async def transaction(connection: Connection) -> T:
            async with connection.transaction():
                return await work(connection)

        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                return await self.run(transaction)
            except _RETRYABLE:
                if attempt == TRANSACTION_ATTEMPTS:
                    raise
                log.warning("transaction aborted by a concurrent one; retrying (%d)", attempt)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.raw.close()


async def _terminated_if_cut_short(
    connection: Connection, work: Callable[[Connection], Awaitable[T]]
) -> T:
    try:
        return await work(connection)
    except asyncio.CancelledError:
        # Handing back a connection whose statement was cut short waits for the server to
        # acknowledge the cancel, which a hung server never does: drop it instead.
        connection.terminate()
        raise


RECONNECT_FIRST_DELAY_S = 0.1
RECONNECT_MAX_DELAY_S = 5.0
"""A lost LISTEN connection is re-opened at once, then after delays doubling from the
first to the most, for as long as it takes."""
_RECONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class Listener:
    """A dedicated connection that LISTENs for job events and cancel requests and turns
    them into :class:`Signals` for this process.

    A lost connection is re-opened with bounded backoff. Notifications sent while it was
    down are gone, so once it is back every watcher is woken (they re-read what they
    follow) and ``resync`` runs, to replay what else the loss may have hidden.
    """

    def __init__(
        self,
        dsn: str,
        signals: Signals,
        *,
        resync: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._dsn = dsn
        self._signals = signals
        self._resync = resync
        self._connection: asyncpg.Connection | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Open the connection; raises when it cannot be had, so a server fails early."""
        self._connection = await self._connect()

    async def _connect(self) -> asyncpg.Connection:
        connection = await asyncpg.connect(self._dsn, timeout=10)
        try:
            await connection.add_listener(EVENTS_CHANNEL, self._on_event)
            await connection.add_listener(CANCELS_CHANNEL, self._on_cancel)
        except BaseException:
            connection.terminate()
            raise
        connection.add_termination_listener(self._on_lost)
        return connection

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._connection is not None:
            await self._connection.close()

    def _on_event(self, _c: object, _pid: int, _channel: str, payload: object) -> None:
        self._signals.job_changed(str(payload))

    def _on_cancel(self, _c: object, _pid: int, _channel: str, payload: object) -> None:
        self._signals.cancel_requested(str(payload))

    def _on_lost(self, connection: object) -> None:
        if self._closed or connection is not self._connection:
            return
        self._connection = None
        if self._reconnecting is None:
            self._reconnecting = asyncio.create_task(self._reconnect(), name="LISTEN reconnect")

    async def _reconnect(self) -> None:
        delay = RECONNECT_FIRST_DELAY_S
        while not self._closed:
            try:
                connection = await self._connect()
            except _RECONNECT_ERRORS as exc:
                log.warning("LISTEN connection lost; reconnecting in %.1f s (%s)", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
                continue
            self._connection = connection
            log.info("LISTEN connection re-opened")
            self._signals.everything_changed()
            await self._run_resync()
            if self._connection is connection:
                break
            # Lost again while resyncing; _on_lost saw this task running and left it to us.
        self._reconnecting = None

    async def _run_resync(self) -> None:
        if self._resync is None:
            return
        try:
            await self._resync()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not fatal: the lease heartbeat finds pending cancel requests on its own.
            log.exception("replaying what the lost LISTEN connection missed failed")
