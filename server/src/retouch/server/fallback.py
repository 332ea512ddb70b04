"""What a job ends with when every provider it could fall back to failed.

Each attempt's failure is kept; when none is left the job ends with one status that
names them all. UNAVAILABLE when any provider was down, RESOURCE_EXHAUSTED when every
one was at its upstream rate limit; its RetryInfo says when the first of them is worth
trying again: a provider whose circuit breaker opened is not, before its re-probe.
"""

from __future__ import annotations

from .breaker import Breakers, BreakerState
from .errors import ResourceExhausted, RetouchError, Unavailable


class FailedAttempts:
    """The failures of one job's attempts, in order."""

    def __init__(self, breakers: Breakers | None) -> None:
        self._breakers = breakers
        self._failures: list[tuple[str, RetouchError]] = []

    def add(self, provider: str, error: RetouchError) -> None:
        self._failures.append((provider, error))

    def final(self) -> RetouchError:
        """The error the job ends with; needs at least one failure."""
        if not self._failures:
            raise ValueError("no attempt failed")
        waits = [w for w in (self._retry_after(p, e) for p, e in self._failures) if w is not None]
        retry_after = min(waits) if waits else None
        errors = [error for _, error in self._failures]
        if all(isinstance(e, ResourceExhausted) for e in errors):
            exhausted = [e for e in errors if isinstance(e, ResourceExhausted)]
            if len(exhausted) == 1:
                only = exhausted[0]
                only.retry_after = retry_after
                return only
            return ResourceExhausted(
                "every provider able to do this job refused it: " + self._summary(),
                violations=[v for e in exhausted for v in e.violations],
                retry_after=retry_after,
            )
        if len(errors) == 1 and not isinstance(errors[0], Unavailable):
            return errors[0]
        retry = retry_after if retry_after is not None else 1.0
        if len(errors) == 1:
            return Unavailable(errors[0].message, retry_after=retry)
        return Unavailable(
            f"every provider able to do this job failed; retry in {retry:.2f} s: "
            + self._summary(),
            retry_after=retry,
        )

    def _summary(self) -> str:
        return "; ".join(error.message for _, error in self._failures)

    def _retry_after(self, provider: str, error: RetouchError) -> float | None:
        if self._breakers is not None:
            breaker = self._breakers.snapshot(provider)
            if breaker.state is BreakerState.OPEN:
                return breaker.reprobe_in_s
        if isinstance(error, Unavailable | ResourceExhausted):
            return error.retry_after
        return None


__all__ = ["FailedAttempts"]
