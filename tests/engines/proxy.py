"""A TCP proxy on loopback that a test switches between forwarding, a database that is
down (every connection dropped at once) and a hung one (connections accepted, nothing
forwarded), without touching the engine behind it, which other tests share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

Mode = Literal["forward", "down", "hung"]


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream``; :meth:`switch` changes what it does."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._mode: Mode = "forward"
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, upstream_host: str, upstream_port: int) -> AsyncIterator[TcpProxy]:
        proxy = cls(upstream_host, upstream_port)
        proxy._server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        try:
            yield proxy
        finally:
            proxy._server.close()
            proxy._drop_all()

    def switch(self, mode: Mode) -> None:
        """``down`` drops every connection and each new one; ``hung`` holds every byte
        (as a stopped server would) until ``forward`` lets them through again."""
        self._mode = mode
        if mode == "forward":
            self._forwarding.set()
        else:
            self._forwarding.clear()
        if mode == "down":
            self._drop_all()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "down":
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, upstream_writer))
        try:
            await asyncio.gather(
                self._pump(reader, upstream_writer), self._pump(upstream_reader, writer)
            )
        finally:
            for end in (writer, upstream_writer):
                end.transport.abort()
                self._writers.discard(end)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self._forwarding.wait()
                if writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
