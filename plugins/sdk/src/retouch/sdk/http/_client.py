"""The HTTP client a remote provider makes its calls with: one aiohttp session per
provider, deadlines, retries, body caps, content-type checks, SSRF-safe downloads and
redaction of secrets."""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

import aiohttp
from yarl import URL

from .._context import JobContext
from .._errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from .._events import Progress
from .._secrets import Redactor, Secret
from .._tracing import client_span
from ._addresses import AddressPolicy, AddressRefused, GuardedResolver, host_allowed, ip_literal
from ._response import Response, media_type, type_matches
from ._retry import backoff_delay, parse_retry_after
from ._settings import HttpConfig, HttpRuntime

log = logging.getLogger("retouch.sdk.http")

T = TypeVar("T")

Classifier = Callable[[Response], ProviderError | None]
"""Looks at a non-2xx answer first and returns the error it means for this API (for
example a content-filter refusal), or ``None`` for the default mapping."""

CHUNK_BYTES = 64 * 1024
DETAIL_CHARS = 300
REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class FilePart:
    """A file field of a multipart form."""

    data: bytes
    filename: str
    content_type: str


FormValue = str | FilePart
"""A multipart form field: a plain value or a file."""


# Not slotted: a slotted generic dataclass breaks ``Polled[T](...)`` construction.
@dataclass(frozen=True)
class Polled(Generic[T]):
    """What one check of an asynchronous job found: ``value`` once it is finished,
    otherwise how far along it is (``fraction`` in 0..1 when the API says)."""

    value: T | None = None
    fraction: float | None = None
    stage: str = "waiting for the provider"

    @property
    def done(self) -> bool:
        return self.value is not None


# Not slotted: a slotted generic dataclass breaks ``Done[T](...)`` construction.
@dataclass(frozen=True)
class Done(Generic[T]):
    """The last item :meth:`HttpClient.poll` yields: the finished job's value."""

    value: T


def bearer(token: Secret) -> Secret:
    """An ``Authorization`` header value ``Bearer <token>``, still a secret."""
    return Secret(f"Bearer {token.reveal()}")


class HttpClient:
    """HTTP for one provider, on one :class:`aiohttp.ClientSession`.

    Every call takes the job's :class:`~retouch.sdk.JobContext`: its trace headers are
    sent, and each attempt's total timeout is bounded by the time the job has left.
    Failures become :class:`~retouch.sdk.ProviderError` subclasses (see
    :meth:`request`); messages never hold a secret the client knows of (those given
    as ``secrets``, and every :class:`~retouch.sdk.Secret` header value).

    Use it as an async context manager, or call :meth:`start` and :meth:`aclose`.
    """

    def __init__(
        self,
        provider: str,
        config: HttpConfig,
        *,
        headers: Mapping[str, str | Secret] | None = None,
        secrets: Iterable[Secret] = (),
        runtime: HttpRuntime | None = None,
    ) -> None:
        self.provider = provider
        self.config = config
        self.runtime = runtime if runtime is not None else HttpRuntime()
        self.redact = Redactor(secrets)
        self._headers = dict(headers or {})
        for value in self._headers.values():
            if isinstance(value, Secret):
                self.redact.add(value)
        self._base = config.base
        self._addresses = AddressPolicy(
            self.runtime.addresses.allow
            + AddressPolicy.allowing(*config.download_allow_networks).allow
        )
        self._session: aiohttp.ClientSession | None = None

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session (idempotent; :meth:`request` also opens it on first use)."""
        if self._session is not None and not self._session.closed:
            return
        resolver = GuardedResolver(
            self._addresses, trusted=[self._base.host or ""], resolver=self.runtime.resolver
        )
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections,
            limit_per_host=self.config.max_connections_per_host,
            resolver=resolver,
            ttl_dns_cache=30,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": self.config.user_agent},
            trust_env=False,
        )

    async def aclose(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> HttpClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def started(self) -> bool:
        return self._session is not None and not self._session.closed

    # --- calls ----------------------------------------------------------------------

    def url(self, path: str | URL) -> URL:
        """``path`` joined below ``base_url`` (an absolute URL is returned as is)."""
        target = path if isinstance(path, URL) else URL(path)
        if target.is_absolute():
            return target
        return self._base.join(URL(str(target).lstrip("/")))

    async def request(
        self,
        method: str,
        path: str | URL,
        *,
        context: JobContext | None,
        json: object = None,
        data: bytes | None = None,
        form: Mapping[str, FormValue | Sequence[FormValue]] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str | Secret] | None = None,
        expect: str | Sequence[str] | None = None,
        ok: Collection[int] = range(200, 300),
        max_bytes: int | None = None,
        retry: bool = True,
        idempotent: bool = True,
        classify: Classifier | None = None,
    ) -> Response:
        """Send one request, retrying as the config's :class:`RetryPolicy` says.

        ``path`` is joined below ``base_url``; an absolute URL on another host must
        pass the download checks (allow-list, address policy). The body is ``json``
        (serialised), raw ``data`` or a multipart ``form`` (rebuilt per attempt).
        Answers with a status in ``ok`` are returned (checked against ``expect``);
        others raise:

        - 429 → :class:`~retouch.sdk.ProviderRateLimited` (``retry_after`` from the
          answer) once retries are spent or ``Retry-After`` is too long to wait;
        - 5xx, 408, connection errors → :class:`~retouch.sdk.ProviderUnavailable`;
          504 and timeouts → :class:`~retouch.sdk.ProviderTimeout`;
        - 401/403 (our credentials) and 404/405 (our configuration) →
          :class:`~retouch.sdk.ProviderUnavailable`: the caller did nothing wrong;
        - other 4xx → :class:`~retouch.sdk.ProviderRejected` with the API's words;
        - a wrong content type, an oversized or malformed body →
          :class:`~retouch.sdk.ProviderBadResponse`.

        ``classify`` may map an answer to another error first. With ``retry=False``
        nothing is retried. With ``idempotent=False`` (a call that creates something
        upstream, with no idempotency key to make a repeat harmless) only what certainly
        did not reach the API is retried: a 429, and a connection that could not be
        made; a 5xx, a reset or a timeout after sending raise at once, and the server
        falls back to another provider instead of risking a second paid job.
        """
        target = self.url(path)
        if target.host != self._base.host:
            self._check_foreign(target)
        return await self._with_retries(
            method,
            target,
            context=context,
            body=_Body(json, data, form),
            params=params,
            headers=headers,
            expect=expect,
            ok=ok,
            max_bytes=max_bytes,
            retry=retry,
            idempotent=idempotent,
            classify=classify,
        )

    async def post_json(
        self,
        path: str | URL,
        body: object,
        *,
        context: JobContext | None,
        headers: Mapping[str, str | Secret] | None = None,
        retry: bool = True,
        idempotent: bool = True,
        classify: Classifier | None = None,
    ) -> Response:
        """POST a JSON ``body``; the answer must be JSON. See :meth:`request` for
        ``retry`` and ``idempotent``."""
        return await self.request(
            "POST",
            path,
            context=context,
            json=body,
            headers=headers,
            expect="application/json",
            retry=retry,
            idempotent=idempotent,
            classify=classify,
        )

    async def get_json(
        self,
        path: str | URL,
        *,
        context: JobContext | None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str | Secret] | None = None,
        classify: Classifier | None = None,
    ) -> Response:
        """GET a JSON answer."""
        return await self.request(
            "GET",
            path,
            context=context,
            params=params,
            headers=headers,
            expect="application/json",
            classify=classify,
        )

    async def download(
        self,
        url: str,
        *,
        context: JobContext | None,
        expect: str | Sequence[str] = ("image/",),
        max_bytes: int | None = None,
        headers: Mapping[str, str | Secret] | None = None,
    ) -> Response:
        """Fetch a provider's output URL, safely.

        The URL's scheme must be one of ``download_schemes`` and its host the API host
        or one of ``download_hosts``; an IP address (literal, or any a name resolves
        to) must pass the address policy, which refuses loopback, private, link-local
        and cloud metadata addresses. Redirects are followed by hand, up to
        ``download_max_redirects``, each hop checked again. A refused URL raises
        :class:`~retouch.sdk.ProviderBadResponse`, before anything connects to it.
        """
        current = URL(url)
        for _hop in range(self.config.download_max_redirects + 1):
            self._check_download(current)
            response = await self._with_retries(
                "GET",
                current,
                context=context,
                body=_Body(None, None, None),
                params=None,
                headers=headers,
                expect=None,
                ok=range(200, 400),
                max_bytes=max_bytes,
                retry=True,
                classify=None,
            )
            if response.status not in REDIRECTS:
                if not 200 <= response.status < 300:
                    raise response.malformed(f"HTTP {response.status}")
                self._check_type(response, expect)
                return response
            location = response.headers.get("Location")
            if not location:
                raise response.malformed(f"a redirect (HTTP {response.status}) without Location")
            current = current.join(URL(location))
        raise ProviderBadResponse(
            self.redact(
                f"the {self.provider} API's output URL redirected more than "
                f"{self.config.download_max_redirects} times"
            )
        )

    async def poll(
        self,
        check: Callable[[], Awaitable[Polled[T]]],
        *,
        context: JobContext | None,
        interval: float = 1.0,
        max_interval: float = 5.0,
        backoff: float = 1.5,
    ) -> AsyncGenerator[Progress | Done[T], None]:
        """Check an asynchronous job until it is done, yielding
        :class:`~retouch.sdk.Progress` as it moves (fractions kept monotonic) and then
        one :class:`Done` with the finished value.

        ``check`` is called at once, then after waits that start at ``interval`` and
        grow by ``backoff`` up to ``max_interval``, never past the job's deadline:
        when that comes, :class:`~retouch.sdk.ProviderTimeout` is raised. ``check``
        raises its own errors for jobs that failed upstream. Cancelling stops polling
        (cancel the upstream job in a ``finally`` of your own).
        """
        if interval <= 0 or max_interval < interval or backoff < 1:
            raise ValueError("poll needs 0 < interval <= max_interval and backoff >= 1")
        wait = interval
        fraction = 0.0
        stage = ""
        while True:
            state = await check()
            if state.value is not None:
                yield Done(state.value)
                return
            new_fraction = fraction
            if state.fraction is not None:
                new_fraction = max(fraction, min(1.0, max(0.0, state.fraction)))
            if new_fraction != fraction or state.stage != stage:
                fraction, stage = new_fraction, state.stage
                yield Progress(fraction, stage)
            left = None if context is None else context.time_left()
            if left is not None and left <= 0:
                raise ProviderTimeout(
                    f"the {self.provider} API did not finish the job before its deadline"
                )
            await self.runtime.sleep(wait if left is None else min(wait, left))
            wait = min(max_interval, wait * backoff)

    # --- internals ------------------------------------------------------------------

    def _check_foreign(self, target: URL) -> None:
        """A URL off the API host: the same rules as a download."""
        self._check_download(target)

    def _check_download(self, target: URL) -> None:
        shown = self.redact(str(target.with_query(None).with_fragment(None)))
        if target.scheme not in self.config.download_schemes:
            allowed = ", ".join(sorted(self.config.download_schemes))
            raise ProviderBadResponse(
                f"refused to fetch {shown} for the {self.provider} API: only {allowed} "
                f"URLs are allowed"
            )
        host = target.host or ""
        if host != self._base.host and not host_allowed(host, self.config.download_hosts):
            raise ProviderBadResponse(
                f"refused to fetch {shown} for the {self.provider} API: {host or 'no host'} is "
                f"not among its download hosts"
            )
        address = ip_literal(host)
        if address is not None and not self._addresses.permits(address):
            raise ProviderBadResponse(
                f"refused to fetch {shown} for the {self.provider} API: {address} is a "
                f"loopback, private, link-local or metadata address"
            )

    async def _with_retries(
        self,
        method: str,
        target: URL,
        *,
        context: JobContext | None,
        body: _Body,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str | Secret] | None,
        expect: str | Sequence[str] | None,
        ok: Collection[int],
        max_bytes: int | None,
        retry: bool,
        classify: Classifier | None,
        idempotent: bool = True,
    ) -> Response:
        what = f"{method} {target.path}"
        policy = self.config.retry
        attempts = policy.attempts if retry else 1
        sent_headers = self._merge_headers(
            context, headers, client_headers=target.host == self._base.host
        )
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await self._attempt(
                    method,
                    target,
                    what,
                    context=context,
                    body=body,
                    params=params,
                    headers=sent_headers,
                    max_bytes=max_bytes,
                    attempt=attempt,
                )
            except _Transient as failure:
                error: ProviderError = failure.error
                if not idempotent and not failure.unsent:
                    raise error from None
            else:
                if response.status in ok:
                    if expect is not None:
                        self._check_type(response, expect)
                    return response
                error = self._status_error(response, classify)
                retry_after = error.retry_after
                if response.status not in policy.statuses or not error.retryable:
                    raise error
                if not idempotent and response.status != 429:
                    raise error
            if attempt >= attempts:
                raise self._spent(error, attempt)
            if retry_after is not None and retry_after > policy.max_retry_after:
                raise error
            delay = (
                retry_after
                if retry_after is not None
                else backoff_delay(policy, attempt, self.runtime.random)
            )
            left = None if context is None else context.time_left()
            if left is not None and delay >= left:
                # Sleeping would end past the deadline: give up now, so the server can
                # fall back to another provider while there is time.
                raise error
            log.info(
                "%s",
                self.redact(
                    f"{self.provider}: {what} attempt {attempt} failed ({error.message}); "
                    f"retrying in {delay:.2f} s"
                ),
            )
            await self.runtime.sleep(delay)

    async def _attempt(
        self,
        method: str,
        target: URL,
        what: str,
        *,
        context: JobContext | None,
        body: _Body,
        params: Mapping[str, str] | None,
        headers: dict[str, str],
        max_bytes: int | None,
        attempt: int,
    ) -> Response:
        await self.start()
        assert self._session is not None
        total = self.config.total_timeout
        if context is not None:
            left = context.time_left()
            if left is not None:
                if left <= 0:
                    raise ProviderTimeout(
                        f"the job's deadline passed before {what} to the {self.provider} "
                        f"API could be sent"
                    )
                total = min(total, left)
        # sock_connect, not connect: aiohttp's connect timeout also counts the wait for
        # a free pooled connection, which with many long hosted jobs in flight is the
        # job's own business (bounded by total), not a sign the API is unreachable.
        timeout = aiohttp.ClientTimeout(
            total=total,
            sock_connect=self.config.connect_timeout,
            sock_read=self.config.read_timeout,
        )
        cap = self.config.max_response_bytes if max_bytes is None else max_bytes
        shown_url = self.redact(str(target.with_query(None).with_fragment(None)))
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.full": shown_url,
            "server.address": target.host or "",
            "retouch.provider": self.provider,
        }
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        with client_span(f"{method} {self.provider}", attributes) as span:
            try:
                async with self._session.request(
                    method,
                    target,
                    params=params,
                    headers=headers,
                    data=body.payload(),
                    allow_redirects=False,
                    timeout=timeout,
                ) as answer:
                    span.set("http.response.status_code", answer.status)
                    body_bytes = await self._read_capped(answer, what, cap)
                    return Response(
                        provider=self.provider,
                        what=what,
                        status=answer.status,
                        headers=answer.headers,
                        body=body_bytes,
                        url=answer.url,
                    )
            except asyncio.CancelledError:
                raise
            except ProviderError:
                raise
            except aiohttp.ClientConnectorDNSError as exc:
                if isinstance(exc.os_error, AddressRefused) or isinstance(
                    exc.__cause__, AddressRefused
                ):
                    refused = exc.__cause__ if exc.__cause__ is not None else exc.os_error
                    raise ProviderBadResponse(
                        self.redact(
                            f"refused to fetch {shown_url} for the {self.provider} API: {refused}"
                        )
                    ) from None
                raise _Transient(
                    self._unavailable(what, f"cannot resolve {target.host}"), unsent=True
                ) from None
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                kind = "connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "answer"
                limit = self.config.connect_timeout if kind == "connect" else None
                detail = (
                    f"did not connect within {limit:g} s"
                    if limit is not None
                    else "did not answer in time"
                )
                raise _Transient(
                    ProviderTimeout(self.redact(f"the {self.provider} API {detail} ({what})")),
                    unsent=kind == "connect",
                ) from None
            except aiohttp.ClientPayloadError as exc:
                raise _Transient(
                    self._unavailable(what, f"the answer was cut off ({type(exc).__name__})")
                ) from None
            except aiohttp.ClientConnectionError as exc:
                raise _Transient(
                    self._unavailable(what, f"the connection failed ({_describe(exc)})"),
                    unsent=isinstance(exc, aiohttp.ClientConnectorError),
                ) from None
            except aiohttp.ClientError as exc:
                raise ProviderBadResponse(
                    self.redact(
                        f"the {self.provider} API's answer to {what} could not be read "
                        f"({_describe(exc)})"
                    )
                ) from None

    async def _read_capped(self, answer: aiohttp.ClientResponse, what: str, cap: int) -> bytes:
        length = answer.content_length
        if length is not None and length > cap:
            answer.close()
            raise self._oversize(what, cap, f"announced {length} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in answer.content.iter_chunked(CHUNK_BYTES):
            size += len(chunk)
            if size > cap:
                # Drop the connection rather than drain the rest of a huge body.
                answer.close()
                raise self._oversize(what, cap, f"sent more than {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _oversize(self, what: str, cap: int, detail: str) -> ProviderBadResponse:
        return ProviderBadResponse(
            f"the {self.provider} API answered {what} with a body over the {cap} byte cap "
            f"({detail})"
        )

    def _check_type(self, response: Response, expect: str | Sequence[str]) -> None:
        actual = response.content_type
        if not type_matches(actual, expect):
            wanted = expect if isinstance(expect, str) else " or ".join(expect)
            raise response.malformed(
                f"content type {actual or 'none'!r} where {wanted!r} was expected"
            )

    def _merge_headers(
        self,
        context: JobContext | None,
        headers: Mapping[str, str | Secret] | None,
        *,
        client_headers: bool,
    ) -> dict[str, str]:
        merged: dict[str, str | Secret] = {}
        if context is not None:
            merged.update(context.trace_headers)
        if client_headers:
            # The client's own headers (its Authorization) are for the API host only:
            # an output URL on a CDN, or wherever a redirect leads, never receives them.
            merged.update(self._headers)
        if headers:
            merged.update(headers)
        sent: dict[str, str] = {}
        for name, value in merged.items():
            if isinstance(value, Secret):
                self.redact.add(value)
                sent[name] = value.reveal()
            else:
                sent[name] = value
        return sent

    def _status_error(self, response: Response, classify: Classifier | None) -> ProviderError:
        if classify is not None:
            custom = classify(response)
            if custom is not None:
                return custom
        status = response.status
        detail = self.redact(_detail(response))
        said = f": {detail}" if detail else ""
        retry_after = parse_retry_after(
            response.headers.get("Retry-After"), now=self.runtime.clock.now()
        )
        name, what = self.provider, response.what
        if status == 429:
            return ProviderRateLimited(
                f"the {name} API is rate limiting us (HTTP 429 to {what}){said}",
                retry_after=retry_after,
            )
        if status == 504:
            return ProviderTimeout(
                f"the {name} API timed out (HTTP 504 to {what}){said}", retry_after=retry_after
            )
        if status >= 500 or status == 408:
            return ProviderUnavailable(
                f"the {name} API failed (HTTP {status} to {what}){said}", retry_after=retry_after
            )
        if status in (401, 403):
            return ProviderUnavailable(
                f"the {name} API refused our credentials (HTTP {status} to {what}){said}; the "
                f"operator should check the provider's API key"
            )
        if status in (404, 405):
            return ProviderUnavailable(
                f"the {name} API has no {what} (HTTP {status}){said}; the operator should check "
                f"the provider's base_url and paths"
            )
        if 400 <= status < 500:
            return ProviderRejected(f"the {name} API refused the request (HTTP {status}){said}")
        return response.malformed(f"an unexpected HTTP {status}")

    def _spent(self, error: ProviderError, attempts: int) -> ProviderError:
        if attempts <= 1:
            return error
        # Same kind of error, saying that retrying did not help.
        message = f"{error.message} (after {attempts} attempts)"
        if isinstance(error, ProviderRateLimited):
            return ProviderRateLimited(message, retry_after=error.retry_after)
        if isinstance(error, ProviderTimeout):
            return ProviderTimeout(message, retry_after=error.retry_after)
        if isinstance(error, ProviderUnavailable):
            return ProviderUnavailable(message, retry_after=error.retry_after)
        return error

    def _unavailable(self, what: str, problem: str) -> ProviderUnavailable:
        return ProviderUnavailable(
            self.redact(f"the {self.provider} API could not be reached for {what}: {problem}")
        )


class _Transient(Exception):
    """An attempt that failed in a way worth retrying; carries the error to raise.
    ``unsent``: the request certainly never reached the API (no connection was made)."""

    def __init__(self, error: ProviderError, *, unsent: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.unsent = unsent


@dataclass(frozen=True, slots=True)
class _Body:
    json: object
    data: bytes | None
    form: Mapping[str, FormValue | Sequence[FormValue]] | None

    def payload(self) -> bytes | aiohttp.FormData | aiohttp.BytesPayload | None:
        if self.form is not None:
            # A FormData is spent once sent, so each attempt builds its own.
            form = aiohttp.FormData()
            for name, values in self.form.items():
                for value in values if isinstance(values, list | tuple) else (values,):
                    if isinstance(value, FilePart):
                        form.add_field(
                            name,
                            value.data,
                            filename=value.filename,
                            content_type=value.content_type,
                        )
                    else:
                        form.add_field(name, value)
            return form
        if self.json is not None:
            return aiohttp.BytesPayload(
                jsonlib.dumps(self.json, separators=(",", ":")).encode(),
                content_type="application/json",
            )
        return self.data


def _detail(response: Response) -> str:
    """The API's own words about an error, short: a JSON error message or the text."""
    text = ""
    if response.content_type.endswith("json"):
        try:
            document = jsonlib.loads(response.body)
        except ValueError:
            document = None
        text = _message_in(document)
    if not text and media_type(response.headers.get("Content-Type", "")).startswith("text/"):
        text = response.text()
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."


def _message_in(document: object) -> str:
    if isinstance(document, str):
        return document
    if isinstance(document, dict):
        for key in ("message", "error", "detail", "errors", "title", "name"):
            if key in document:
                found = _message_in(document[key])
                if found:
                    return found
    if isinstance(document, list) and document:
        return "; ".join(filter(None, (_message_in(item) for item in document[:3])))
    return ""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
