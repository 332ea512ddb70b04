"""When a failed call is tried again, and how long to wait first."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias

from ._errors import ResourceExhausted, RetouchError, Unavailable

Sleep: TypeAlias = Callable[[float], Awaitable[None]]
"""How the client waits between attempts (``asyncio.sleep``; a fake in tests)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures are retried, how often, and how long to wait.

    Only statuses that mean "try again later" are retried:

    - RESOURCE_EXHAUSTED with ``RetryInfo`` (a rate limit), after the delay it names. A
      spent quota or balance carries no ``RetryInfo`` and is never retried.
    - UNAVAILABLE, after its ``RetryInfo`` delay, or after an exponential backoff from
      ``backoff`` seconds when it has none (the server could not be reached).

    Everything else — INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND,
    DEADLINE_EXCEEDED, INTERNAL… — is raised at once. Edits are safe to retry because
    every attempt sends the same ``request_id``: the server returns the job the first
    attempt made and never charges twice.
    """

    max_attempts: int = 3
    """Attempts in all, the first included; 1 disables retries."""
    backoff: float = 0.25
    """First wait, in seconds, for an UNAVAILABLE without ``RetryInfo``; doubles after."""
    max_delay: float = 30.0
    """A ``RetryInfo`` asking for a longer wait is not waited for: the error is raised."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.backoff < 0 or self.max_delay < 0:
            raise ValueError("backoff and max_delay must not be negative")

    def delay(self, error: RetouchError, attempt: int) -> float | None:
        """Seconds to wait before trying again after ``attempt`` (from 1) failed with
        ``error``, or ``None`` when it must not be retried."""
        if attempt >= self.max_attempts:
            return None
        if isinstance(error, ResourceExhausted):
            wait = error.retry_after
        elif isinstance(error, Unavailable):
            wait = error.retry_after
            if wait is None:
                wait = self.backoff * 2 ** (attempt - 1)
        else:
            return None
        if wait is None or wait > self.max_delay:
            return None
        return max(0.0, wait)


class Deadline:
    """The time left to a call that may span several attempts."""

    def __init__(self, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = None if timeout is None else clock() + timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` when there is no deadline."""
        if self._end is None:
            return None
        return max(0.0, self._end - self._clock())

    def allows(self, wait: float) -> bool:
        """Whether waiting ``wait`` seconds still leaves time for another attempt."""
        left = self.remaining()
        return left is None or wait < left
