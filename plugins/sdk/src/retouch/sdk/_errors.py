"""Errors a provider raises to tell the server what went wrong and what to do next.

    ProviderError                 base; ``retryable`` says whether another provider
    │                             (or a later attempt) may succeed
    ├── ProviderRejected          this input can never succeed here (not retryable)
    ├── ProviderUnavailable       down, unreachable or failing (retryable)
    │   ├── ProviderTimeout       did not answer in time (retryable)
    │   └── ProviderBadResponse   answered something unusable: malformed JSON, the
    │                             wrong content type, a missing field, an oversized
    │                             body (retryable: another provider may do better)
    └── ProviderRateLimited       upstream said "too many requests" (retryable,
                                  ``retry_after`` seconds when the upstream told us)

The message is shown to callers, so write it for them: what was wrong, what to do.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every provider error."""

    retryable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ProviderRejected(ProviderError):
    """The provider refuses this request; retrying or another provider won't help.

    ``field`` names the request field at fault when there is one (e.g. ``"model"``).
    """

    retryable = False

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class ProviderUnavailable(ProviderError):
    """The provider cannot serve now; the router may try another one."""

    retryable = True


class ProviderTimeout(ProviderUnavailable):
    """The provider did not answer in time."""


class ProviderBadResponse(ProviderUnavailable):
    """The provider answered, but not with something we can use. The message names
    the provider and what was wrong with the answer."""


class ProviderRateLimited(ProviderError):
    """The provider's upstream limit was hit."""

    retryable = True
