"""``result_url``: a short-lived link that downloads a result without credentials.

On an object store that presigns (S3 and its kin) the link is a presigned GET. On the
embedded defaults (file://, memory://) it points at this server's own HTTP route
(:mod:`.results_http`), signed with HMAC-SHA256 over the result id, its owner and the
expiry: the owner is bound by the signature rather than written in the URL, so a link
opens only the result it was made for, only until it expires, and a changed character
anywhere makes it a plain 404.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlencode

from .clock import Clock
from .jobs.records import ResultRecord
from .storage import ObjectStore, PresigningStore

KEY_FILE = "result-url.key"
ROUTE = "/v1/results/"


class ResultUrlSigner:
    """Makes and checks the signed URLs of this server's result route."""

    def __init__(self, key: bytes, base_url: str) -> None:
        if len(key) < 16:
            raise ValueError("the result URL key must be at least 16 bytes")
        self._key = key
        self.base_url = base_url.rstrip("/")

    def url(self, result: ResultRecord, expires_at: int) -> str:
        """The URL of ``result``, valid until ``expires_at`` (epoch seconds)."""
        query = urlencode(
            {"expires": str(expires_at), "signature": self._sign(result, str(expires_at))}
        )
        return f"{self.base_url}{ROUTE}{quote(result.result_id, safe='')}?{query}"

    def valid(self, result: ResultRecord, expires: str, signature: str, now: float) -> bool:
        """Whether ``signature`` is this server's for ``result`` and ``expires``, and
        ``expires`` is still ahead. The comparison takes the same time whatever differs."""
        expected = self._sign(result, expires)
        matches = hmac.compare_digest(expected.encode(), signature.encode())
        return matches and expires.isdigit() and int(expires) > now

    def _sign(self, result: ResultRecord, expires: str) -> str:
        message = "\n".join((result.result_id, result.owner, expires)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


def load_or_create_key(configured_hex: str, data_dir: Path) -> bytes:
    """The configured key, else the one kept under ``data_dir``, else a new one kept
    there (readable by this user only); replicas serving each other's links share it."""
    if configured_hex:
        try:
            return bytes.fromhex(configured_hex)
        except ValueError:
            raise ValueError("result_url_key must be hex digits") from None
    path = data_dir / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return bytes.fromhex(path.read_text().strip())
    key = secrets.token_bytes(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(descriptor, "w") as file:
        file.write(key.hex())
    return key


class ResultLinks:
    """Gives a result its ``result_url``: presigned by the store, or signed here."""

    def __init__(
        self,
        objects: ObjectStore,
        clock: Clock,
        *,
        expiry_s: int,
        signer: ResultUrlSigner | None,
    ) -> None:
        # Checked once: isinstance against a runtime Protocol walks its members each time.
        self._presigning = objects if isinstance(objects, PresigningStore) else None
        self._clock = clock
        self._expiry_s = expiry_s
        self._signer = signer

    async def url(self, result: ResultRecord) -> str:
        """A fresh URL for ``result``, or "" when this server offers none."""
        if self._presigning is not None:
            return await self._presigning.presigned_url(result.object_key, self._expiry_s)
        if self._signer is None:
            return ""
        return self._signer.url(result, math.ceil(self._clock.now() + self._expiry_s))
