"""The settings of one provider's HTTP client, and the config keys that set them."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver
from yarl import URL

from .._config import ConfigReader
from .._context import SYSTEM_CLOCK, Clock
from ._addresses import AddressPolicy

Sleep = Callable[[float], Awaitable[None]]
"""An async sleep; tests pass one that records the delay and returns at once."""

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries with full-jitter exponential backoff.

    Attempt ``n`` (from 1) that fails with a retryable answer (429, 5xx, 408) or a
    connection error waits a uniformly random time in 0..min(``max_delay``,
    ``base_delay`` * 2**(n-1)), or what ``Retry-After`` says when the answer carries
    it, then tries again, at most ``attempts`` times in all. A wait that would end
    past the job's deadline, or a ``Retry-After`` over ``max_retry_after``, is not
    waited: the error is raised at once, so the server can fall back.
    """

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0
    statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.max_retry_after) < 0:
            raise ValueError("retry delays cannot be negative")


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """How one provider talks HTTP. Validated on construction.

    - ``base_url``: the API root; relative paths are joined to it. Its host is trusted
      (the operator chose it), so it may be private or loopback.
    - ``connect_timeout`` / ``read_timeout`` (per socket read) / ``total_timeout``
      (per attempt, further bounded by the job's time left), in seconds.
    - ``max_connections`` (and per host): the session's connection pool; a call
      beyond it waits for a free connection within its total timeout.
    - ``max_response_bytes``: answers longer than this are cut off and refused.
    - ``download_hosts``: hosts output URLs may be downloaded from (exact, or
      ``*.example.com``); the API host itself is always allowed.
    - ``download_max_redirects``: redirects followed by a download, each re-checked.
    - ``download_schemes``: URL schemes downloads accept (``https`` only by default).
    - ``download_allow_networks``: private networks downloads may reach anyway.
    """

    base_url: str
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    total_timeout: float = 300.0
    max_connections: int = 32
    max_connections_per_host: int = 32
    max_response_bytes: int = 32 * MB
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    download_hosts: tuple[str, ...] = ()
    download_max_redirects: int = 3
    download_schemes: frozenset[str] = frozenset({"https"})
    download_allow_networks: tuple[str, ...] = ()
    user_agent: str = "retouch"

    def __post_init__(self) -> None:
        url = URL(self.base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url {self.base_url!r} must be an http:// or https:// URL")
        if min(self.connect_timeout, self.read_timeout, self.total_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_connections < 1 or self.max_connections_per_host < 1:
            raise ValueError("connection limits must be at least 1")
        if self.max_response_bytes < 1:
            raise ValueError("max_response_bytes must be positive")
        if self.download_max_redirects < 0:
            raise ValueError("download_max_redirects cannot be negative")
        if not self.download_schemes <= {"http", "https"}:
            raise ValueError("download_schemes may hold only http and https")

    @property
    def base(self) -> URL:
        """``base_url`` as a URL, with a trailing slash so paths join below it."""
        url = URL(self.base_url)
        return url if url.path.endswith("/") else url.with_path(url.path + "/")

    @classmethod
    def from_config(cls, read: ConfigReader, *, defaults: HttpConfig | None = None) -> HttpConfig:
        """Read the standard HTTP keys of a provider's config table over ``defaults``
        (the plugin's own choices; ``base_url`` is required without them):

        ``base_url``, ``connect_timeout_s``, ``read_timeout_s``, ``total_timeout_s``,
        ``max_connections``, ``max_response_mb``, ``retry_attempts``,
        ``retry_base_delay_s``, ``retry_max_delay_s``, ``max_retry_after_s``,
        ``download_hosts`` (added to the plugin's own), ``download_http`` (allow
        plain-http downloads) and ``download_allow_networks`` (CIDRs downloads may
        reach although private, e.g. ``["10.20.0.0/16"]``; for tests and private
        deployments).
        """
        base_url = read.string("base_url", None if defaults is None else defaults.base_url)
        base = defaults if defaults is not None else cls(base_url)
        retry = RetryPolicy(
            attempts=read.integer("retry_attempts", base.retry.attempts, minimum=1, maximum=10),
            base_delay=read.number(
                "retry_base_delay_s", base.retry.base_delay, minimum=0.0, maximum=60.0
            ),
            max_delay=read.number(
                "retry_max_delay_s", base.retry.max_delay, minimum=0.0, maximum=300.0
            ),
            max_retry_after=read.number(
                "max_retry_after_s", base.retry.max_retry_after, minimum=0.0, maximum=3600.0
            ),
            statuses=base.retry.statuses,
        )
        schemes = base.download_schemes
        if read.boolean("download_http", False):
            schemes = frozenset({"http", "https"})
        networks = read.strings("download_allow_networks")
        try:
            AddressPolicy.allowing(*networks)
        except ValueError as exc:
            raise ValueError(f"config key 'download_allow_networks': {exc}") from None
        max_mb = read.number(
            "max_response_mb", base.max_response_bytes / MB, minimum=0.001, maximum=1024.0
        )
        return dataclasses.replace(
            base,
            base_url=base_url,
            connect_timeout=read.number(
                "connect_timeout_s", base.connect_timeout, minimum=0.001, maximum=600.0
            ),
            read_timeout=read.number(
                "read_timeout_s", base.read_timeout, minimum=0.001, maximum=3600.0
            ),
            total_timeout=read.number(
                "total_timeout_s", base.total_timeout, minimum=0.001, maximum=86_400.0
            ),
            max_connections=read.integer(
                "max_connections", base.max_connections, minimum=1, maximum=1024
            ),
            max_response_bytes=int(max_mb * MB),
            retry=retry,
            download_hosts=base.download_hosts + read.strings("download_hosts"),
            download_schemes=schemes,
            download_allow_networks=base.download_allow_networks + networks,
        )


@dataclass(frozen=True, slots=True)
class HttpRuntime:
    """What an HTTP client takes from its surroundings, injected so tests control it:
    the clock, the sleep between retries and polls, the jitter source, the address
    policy for downloads and the DNS resolver under it."""

    clock: Clock = SYSTEM_CLOCK
    sleep: Sleep = asyncio.sleep
    random: Callable[[], float] = field(default=random.random)
    addresses: AddressPolicy = field(default_factory=AddressPolicy)
    resolver: AbstractResolver | None = None
