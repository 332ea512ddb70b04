"""When to try again: full-jitter backoff and ``Retry-After``."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable

from ._settings import RetryPolicy


def backoff_delay(policy: RetryPolicy, attempt: int, random: Callable[[], float]) -> float:
    """Full jitter: uniform in 0..min(max_delay, base_delay * 2**(attempt-1)).

    Spreading retries over the whole window (rather than around its end) is what
    keeps many clients that failed together from coming back together.
    """
    ceiling = min(policy.max_delay, math.ldexp(policy.base_delay, max(0, attempt - 1)))
    return ceiling * random()


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds (``"120"``) or an
    HTTP-date (``"Wed, 21 Oct 2026 07:28:00 GMT"``) taken relative to wall time
    ``now``. ``None`` when absent or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
