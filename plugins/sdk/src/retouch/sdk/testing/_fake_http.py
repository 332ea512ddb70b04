"""A scriptable fake of a provider's HTTP API, on aiohttp's test server, for tests of
hosted provider plugins (ours and third parties')."""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import inspect
import json
import socket
import struct
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FormPart:
    """One field of a multipart form the fake received."""

    name: str
    data: bytes = field(repr=False)
    filename: str | None = None
    content_type: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the fake received, for assertions."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str] = field(repr=False)
    body: bytes = field(repr=False)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    @property
    def bearer(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header."""
        value = self.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, FormPart]:
        """The body parsed as ``multipart/form-data``, by field name (last one wins;
        see :meth:`form_parts` for repeated fields)."""
        return {part.name: part for part in self.form_parts()}

    def form_parts(self) -> list[FormPart]:
        """Every field of a ``multipart/form-data`` body, in order."""
        if self.content_type != "multipart/form-data":
            raise AssertionError(f"not a multipart form: Content-Type is {self.content_type!r}")
        head = f"Content-Type: {self.headers['Content-Type']}\r\nMIME-Version: 1.0\r\n\r\n"
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            head.encode() + self.body
        )
        parts: list[FormPart] = []
        for part in message.iter_parts():
            payload = part.get_payload(decode=True)
            parts.append(
                FormPart(
                    name=str(part.get_param("name", header="content-disposition")),
                    data=payload if isinstance(payload, bytes) else b"",
                    filename=part.get_filename(),
                    content_type=part.get_content_type() if part.get("Content-Type") else None,
                )
            )
        return parts


@dataclass(frozen=True, slots=True)
class Reply:
    """What the fake answers one request with: an HTTP answer or a fault.

    Build one with the class methods: :meth:`json`, :meth:`raw`, :meth:`error`,
    :meth:`redirect`, and the faults :meth:`reset` (connection reset), :meth:`stall`
    (no answer until an event is set), :meth:`malformed_json`, :meth:`wrong_type` and
    :meth:`oversize` (a streamed body of any size, never held in memory).
    """

    code: int = 200
    data: bytes = field(default=b"", repr=False)
    content_type: str | None = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    fault: str = ""
    release: asyncio.Event | None = field(default=None, compare=False)
    then: Reply | None = None
    size: int = 0
    announce: bool = False

    @classmethod
    def json(
        cls, document: object, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """A JSON answer."""
        return cls(status, json.dumps(document).encode(), "application/json", dict(headers or {}))

    @classmethod
    def raw(
        cls,
        data: bytes,
        content_type: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An answer of raw ``data`` (an image, text...)."""
        return cls(status, data, content_type, dict(headers or {}))

    @classmethod
    def error(
        cls,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        error: str = "",
    ) -> Reply:
        """An error status (``429`` with ``{"Retry-After": "2"}``, 500...) with a JSON
        ``{"error": ...}`` body."""
        body = json.dumps({"error": error or f"fake status {status}"}).encode()
        return cls(status, body, "application/json", dict(headers or {}))

    @classmethod
    def redirect(cls, location: str, *, status: int = 302) -> Reply:
        """A redirect to ``location``."""
        return cls(status, b"", None, {"Location": location})

    @classmethod
    def reset(cls) -> Reply:
        """Reset the connection (TCP RST) without answering."""
        return cls(fault="reset")

    @classmethod
    def stall(cls, release: asyncio.Event, then: Reply | None = None) -> Reply:
        """Send nothing until ``release`` is set (the client's read timeout should fire
        first), then answer ``then`` (an empty JSON object by default). The server's
        :attr:`FakeHttpServer.stalled` event is set when the stall begins."""
        return cls(fault="stall", release=release, then=then)

    @classmethod
    def malformed_json(cls, *, status: int = 200) -> Reply:
        """A body that claims to be JSON and is not."""
        return cls(status, b'{"output": [unterminated', "application/json")

    @classmethod
    def wrong_type(cls, *, content_type: str = "text/html", status: int = 200) -> Reply:
        """An HTML page where JSON (or an image) belongs, as a proxy's error page is."""
        return cls(status, b"<html><body>Bad gateway</body></html>", content_type)

    @classmethod
    def oversize(
        cls, size: int, *, content_type: str = "application/json", announce: bool = False
    ) -> Reply:
        """A ``size``-byte body, streamed in 1 MiB chunks; with ``announce`` its length
        is sent as Content-Length, otherwise it is chunked."""
        return cls(content_type=content_type, fault="oversize", size=size, announce=announce)


Responder = Callable[[RecordedRequest], Reply | Awaitable[Reply]]
"""Answers a route's requests when no queued reply is left."""


class FakeHttpServer:
    """A local HTTP server that plays a provider's API.

    Script it per route (method and path): :meth:`queue` one-shot :class:`Reply`
    objects, used in order, and :meth:`route` a responder for the rest; a request
    nobody scripted gets a 404. Every request is recorded in :attr:`requests` (see
    :meth:`requests_to`) before it is answered::

        async with FakeHttpServer() as api:
            api.queue("POST", "/images/inpaint", Reply.error(503), Reply.json({...}))
            provider = RestProvider(runtime=HttpRuntime(sleep=no_sleep))
            await provider.start({"base_url": api.url, "api_key": Secret("k")})
            ...
            assert api.requests_to("POST", "/images/inpaint")[0].bearer == "k"
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.stalled = asyncio.Event()
        self._queues: defaultdict[tuple[str, str], deque[Reply]] = defaultdict(deque)
        self._routes: dict[tuple[str, str], Responder] = {}
        self._releases: list[asyncio.Event] = []
        app = web.Application(client_max_size=256 * CHUNK)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")

    async def start(self) -> FakeHttpServer:
        await self._server.start_server()
        return self

    async def close(self) -> None:
        """Release stalled handlers and stop the server."""
        for release in self._releases:
            release.set()
        await self._server.close()

    async def __aenter__(self) -> FakeHttpServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The server's root URL, ``http://127.0.0.1:<port>``."""
        return str(self._server.make_url("")).rstrip("/")

    def url_for(self, path: str) -> str:
        """The absolute URL of ``path`` on this server."""
        return f"{self.url}/{path.lstrip('/')}"

    def route(self, method: str, path: str, responder: Responder) -> None:
        """Answer ``method path`` with ``responder`` once its queue is empty."""
        self._routes[(method.upper(), path)] = responder

    def queue(self, method: str, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``method path`` with ``replies``, in order."""
        self._queues[(method.upper(), path)].extend(replies)

    def pending(self, method: str, path: str) -> int:
        """Queued replies not used yet."""
        return len(self._queues[(method.upper(), path)])

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests to ``method path``, in order."""
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=request.headers,
            body=await request.read(),
        )
        self.requests.append(recorded)
        key = (recorded.method, recorded.path)
        queued = self._queues[key]
        if queued:
            reply = queued.popleft()
        elif key in self._routes:
            answer = self._routes[key](recorded)
            reply = await answer if inspect.isawaitable(answer) else answer
        else:
            reply = Reply.error(404, error=f"the fake has no route {key[0]} {key[1]}")
        return await self._answer(request, reply)

    async def _answer(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.fault == "reset":
            _reset(request)
            return web.Response()
        if reply.fault == "stall":
            assert reply.release is not None
            self._releases.append(reply.release)
            self.stalled.set()
            await reply.release.wait()
            return await self._answer(request, reply.then or Reply.json({}))
        if reply.fault == "oversize":
            return await _stream(request, reply)
        response = web.Response(status=reply.code, body=reply.data, headers=reply.headers)
        if reply.content_type is not None:
            response.content_type = reply.content_type
        return response


def _reset(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0: closing sends RST rather than FIN, as a crashed upstream does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _stream(request: web.Request, reply: Reply) -> web.StreamResponse:
    response = web.StreamResponse(status=reply.code)
    if reply.content_type is not None:
        response.content_type = reply.content_type
    if reply.announce:
        response.content_length = reply.size
    chunk = b" " * CHUNK
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        left = reply.size
        while left > 0:
            await response.write(chunk[: min(left, CHUNK)])
            left -= CHUNK
        await response.write_eof()
    return response
