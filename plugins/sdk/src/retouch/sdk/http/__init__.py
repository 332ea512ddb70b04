"""retouch.sdk.http: what a hosted provider needs to call its API well.

One :class:`HttpClient` per provider (one aiohttp session with connection limits)
bounds each attempt by the job's deadline, retries 429, 5xx and connection errors with
full-jitter backoff honouring ``Retry-After`` (seconds or an HTTP-date), caps and
checks every answer, polls asynchronous jobs (:meth:`HttpClient.poll`), downloads
output URLs only from allowed hosts and public addresses (:class:`AddressPolicy`),
and keeps :class:`~retouch.sdk.Secret` values out of every message, log line and
span. Failures are :class:`~retouch.sdk.ProviderError` subclasses::

    ProviderRateLimited   429 outlasting the retries (``retry_after`` when told)
    ProviderUnavailable   5xx, connection errors, our credentials or paths refused
    ├── ProviderTimeout   timeouts, 504, the job's deadline
    └── ProviderBadResponse  malformed JSON, wrong content type, missing field,
                          body over the cap, a refused download URL
    ProviderRejected      other 4xx: this input will not work here

Time, sleep, jitter and DNS come from an :class:`HttpRuntime`, so tests never wait.
"""

from ._addresses import METADATA_ADDRESSES, AddressPolicy, AddressRefused, GuardedResolver
from ._client import Classifier, Done, FilePart, FormValue, HttpClient, Polled, bearer
from ._remote import SERVER_KEYS, RemoteProvider
from ._response import Response, media_type, pick
from ._retry import backoff_delay, parse_retry_after
from ._settings import HttpConfig, HttpRuntime, RetryPolicy, Sleep

__all__ = [
    "METADATA_ADDRESSES",
    "SERVER_KEYS",
    "AddressPolicy",
    "AddressRefused",
    "Classifier",
    "Done",
    "FilePart",
    "FormValue",
    "GuardedResolver",
    "HttpClient",
    "HttpConfig",
    "HttpRuntime",
    "Polled",
    "RemoteProvider",
    "Response",
    "RetryPolicy",
    "Sleep",
    "backoff_delay",
    "bearer",
    "media_type",
    "parse_retry_after",
    "pick",
]
