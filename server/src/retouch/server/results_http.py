"""The small HTTP app that serves results to signed ``result_url`` links, for object
stores that cannot presign (the embedded file:// and memory:// defaults).

``GET /v1/results/{result_id}?expires=…&signature=…`` streams the result. A missing
result, a wrong, expired or tampered signature, and a result deleted by retention all
get the same bare 404, so a link reveals nothing about what it does not open.
"""

from __future__ import annotations

import logging

from aiohttp import web

from .clock import Clock
from .jobs.records import ResultRecord
from .jobs.store import JobStore
from .result_links import ROUTE, ResultUrlSigner
from .storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
_DECOY = ResultRecord(
    result_id="",
    job_id="",
    owner="",
    object_key="",
    content_type="",
    format="PNG",
    width=0,
    height=0,
    size_bytes=0,
    created_at=0.0,
)


class ResultsHttp:
    """Serves results over HTTP on ``listen`` (``host:port``; port 0 picks one)."""

    def __init__(
        self, store: JobStore, objects: ObjectStore, signer: ResultUrlSigner, clock: Clock
    ) -> None:
        self._store = store
        self._objects = objects
        self._signer = signer
        self._clock = clock
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(ROUTE + "{result_id}", self._download)
        return app

    async def start(self, listen: str) -> int:
        """Start listening; returns the port. A taken port raises ``OSError`` naming it."""
        host, _, port = listen.rpartition(":")
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]") or "127.0.0.1", int(port))
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(
                exc.errno, f"cannot serve results over HTTP on {listen}: {exc.strerror}"
            ) from exc
        address = self._runner.addresses[0]
        return int(address[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _download(self, request: web.Request) -> web.StreamResponse:
        result_id = request.match_info["result_id"]
        expires = request.query.get("expires", "")
        signature = request.query.get("signature", "")
        result = await self._store.get_result(result_id) if result_id else None
        # The decoy makes a missing result cost the same check as a present one.
        checked = result or _DECOY
        now = self._clock.now()
        valid = self._signer.valid(checked, expires, signature, now)
        if result is None or not valid or 0 < result.expires_at <= now:
            return _not_found()
        chunks = self._objects.iter_chunks(result.object_key, CHUNK_BYTES)
        try:
            first = await anext(chunks, b"")
        except ObjectNotFound:
            return _not_found()
        response = web.StreamResponse(
            headers={
                "Content-Type": result.content_type or "application/octet-stream",
                "Content-Length": str(result.size_bytes),
                "Cache-Control": "private, no-store",
                "X-Content-Type-Options": "nosniff",
            }
        )
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found\n")
