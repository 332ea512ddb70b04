"""Work that must run to its end even when the task awaiting it is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def finish_even_if_cancelled(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if this task is cancelled meanwhile, once or again
    (a clean-up, a worker thread still writing to a file), then re-raise the
    cancellation; what ``work`` raised then goes unheard, as the caller is gone."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as never heard
        raise asyncio.CancelledError
    return task.result()
