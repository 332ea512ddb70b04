"""The Redis client of the limits shared by replicas (token buckets, upstream permits):
every call bounded and never retried, so an unreachable Redis is known within the bound
and the configured failure mode decides, never a hung call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from importlib.resources import files
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

T = TypeVar("T")


class RedisUnreachable(Exception):
    """Redis did not answer within the bound."""


def bounded_client(url: str, timeout_s: float) -> Redis:
    """A client of ``url`` whose connects and reads give up after ``timeout_s``."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def lua_script(package: str, name: str) -> str:
    """The Lua script ``name`` shipped in ``package``'s ``lua`` folder."""
    return files(package).joinpath("lua", name).read_text()


async def bounded(call: Awaitable[T], timeout_s: float) -> T:
    """``call``'s answer within ``timeout_s``; raises :class:`RedisUnreachable` when Redis
    could not be reached in time, and what Redis answered when it refused the call."""
    try:
        async with asyncio.timeout(timeout_s):
            return await call
    except ResponseError:
        raise  # Redis answered: an error in the script, not an outage
    except (RedisError, OSError) as exc:  # TimeoutError is an OSError
        raise RedisUnreachable from exc
