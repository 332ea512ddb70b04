"""An object store on S3 or any S3-compatible service (R2, GCS, SeaweedFS, MinIO).

Selected by ``s3://bucket[/prefix]?endpoint_url=…&region=…&addressing_style=path``;
credentials come from the standard AWS chain (``AWS_ACCESS_KEY_ID``, profiles, instance
roles), never from the URL. Uploads of unknown size go up as multipart uploads in
:data:`PART_BYTES` parts, so at most one part is held in memory; any failure or
cancellation aborts the multipart upload. Throttling (``SlowDown``, 503), other 5xx
answers and lost connections raise :class:`StorageUnavailable`, which callers see as
UNAVAILABLE with RetryInfo; botocore's own retries are kept few, so a caller is told
quickly rather than held.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from .base import (
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    validate_chunk_size,
    validate_key,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

PART_BYTES = 8 * 1024 * 1024
"""Multipart part size: S3 needs at least 5 MiB per part but the last."""

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_THROTTLING_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable"}
)
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
    asyncio.TimeoutError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where objects go: a bucket, a key prefix, and how to reach the service."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"

    @classmethod
    def from_url(cls, url: str) -> S3Location:
        """Parse ``s3://bucket[/prefix]?endpoint_url=…&region=…&addressing_style=…``."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "s3" or not parts.netloc:
            raise ValueError(f"storage URL {url!r}: write s3://bucket?endpoint_url=…&region=…")
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint_url", "region", "addressing_style"}
        if unknown:
            raise ValueError(
                f"storage URL {url!r}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                "use endpoint_url, region, addressing_style"
            )
        style = query.get("addressing_style") or ("path" if "endpoint_url" in query else "auto")
        if style not in ("auto", "path", "virtual"):
            raise ValueError(f"storage URL {url!r}: addressing_style is auto, path or virtual")
        prefix = parts.path.strip("/")
        return cls(
            bucket=parts.netloc,
            prefix=f"{validate_key(prefix)}/" if prefix else "",
            endpoint_url=query.get("endpoint_url") or None,
            region=query.get("region") or None,
            addressing_style=style,
        )


class S3ObjectStore:
    """Objects in one S3 bucket, under an optional key prefix.

    The client is opened on first use (``open_store`` is synchronous) and closed by
    :meth:`aclose`, after which the store refuses work rather than open a client
    nobody would close. ``put`` is atomic in S3 itself; ``durable`` is ignored, since an
    acknowledged S3 write is already durable.
    """

    def __init__(
        self,
        location: S3Location,
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 2,
    ) -> None:
        self._location = location
        self._config = AioConfig(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": location.addressing_style},
            signature_version="s3v4",
        )
        self._exit = contextlib.AsyncExitStack()
        self._client: S3Client | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"S3ObjectStore(bucket={self._location.bucket!r}, prefix={self._location.prefix!r})"

    @property
    def location(self) -> S3Location:
        """The bucket, prefix and endpoint this store uses."""
        return self._location

    async def put(self, key: str, data: bytes, *, content_type: str, durable: bool = True) -> None:
        """Store ``data`` under ``key`` with one PUT."""
        name = self._name(key)
        client = await self._open()
        with _mapped(key, "store"):
            await client.put_object(
                Bucket=self._location.bucket, Key=name, Body=data, ContentType=content_type
            )

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        """One PUT when everything fits in a part, a multipart upload otherwise;
        the multipart upload is aborted if ``chunks`` raises or the call is cancelled."""
        name = self._name(key)
        client = await self._open()
        bucket = self._location.bucket
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if len(buffer) >= PART_BYTES:
                    if upload_id is None:
                        with _mapped(key, "store"):
                            started = await client.create_multipart_upload(
                                Bucket=bucket, Key=name, ContentType=content_type
                            )
                        upload_id = started["UploadId"]
                    parts.append(await self._upload_part(key, name, upload_id, parts, buffer))
                    buffer = bytearray()
            if upload_id is None:
                with _mapped(key, "store"):
                    await client.put_object(
                        Bucket=bucket, Key=name, Body=bytes(buffer), ContentType=content_type
                    )
                return size
            if buffer:
                parts.append(await self._upload_part(key, name, upload_id, parts, buffer))
            with _mapped(key, "store"):
                await client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                )
            return size
        except BaseException:
            if upload_id is not None:
                # Shielded: a cancelled upload must still be aborted, or its parts
                # would be billed until a lifecycle rule (if any) removed them.
                await asyncio.shield(self._abort(name, upload_id))
            raise

    async def _upload_part(
        self, key: str, name: str, upload_id: str, parts: list[dict[str, Any]], data: bytearray
    ) -> dict[str, Any]:
        client = await self._open()
        number = len(parts) + 1
        with _mapped(key, "store"):
            answer = await client.upload_part(
                Bucket=self._location.bucket,
                Key=name,
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes(data),
            )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def _abort(self, name: str, upload_id: str) -> None:
        # Best effort: parts left by a failed abort are found again by ``delete``.
        with contextlib.suppress(StorageError, BotoCoreError, ClientError, *_UNREACHABLE):
            client = await self._open()
            await client.abort_multipart_upload(
                Bucket=self._location.bucket, Key=name, UploadId=upload_id
            )

    async def sync(self, key: str) -> None:
        """Nothing to flush; raises :class:`ObjectNotFound` for a missing object."""
        await self.size(key)

    async def get(self, key: str) -> bytes:
        """The whole object; raises :class:`ObjectNotFound`."""
        name = self._name(key)
        client = await self._open()
        with _mapped(key, "read"):
            answer = await client.get_object(Bucket=self._location.bucket, Key=name)
            async with answer["Body"] as body:
                return await body.read()

    async def iter_chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """The object in pieces of exactly ``chunk_size`` bytes (the last may be
        shorter), read from one GET as it goes."""
        validate_chunk_size(chunk_size)
        name = self._name(key)
        client = await self._open()
        with _mapped(key, "read"):
            answer = await client.get_object(Bucket=self._location.bucket, Key=name)
        async with answer["Body"] as body:
            pending = bytearray()
            while True:
                with _mapped(key, "read"):
                    data = await body.read(chunk_size - len(pending))
                if not data:
                    break
                pending += data
                if len(pending) == chunk_size:
                    yield bytes(pending)
                    pending = bytearray()
            if pending:
                yield bytes(pending)

    async def size(self, key: str) -> int:
        """The object's size in bytes; raises :class:`ObjectNotFound`."""
        name = self._name(key)
        client = await self._open()
        with _mapped(key, "read"):
            answer = await client.head_object(Bucket=self._location.bucket, Key=name)
        return answer["ContentLength"]

    async def delete(self, key: str) -> None:
        """Delete the object and abort any unfinished multipart upload of ``key``."""
        name = self._name(key)
        client = await self._open()
        bucket = self._location.bucket
        with _mapped(key, "delete"):
            await client.delete_object(Bucket=bucket, Key=name)
            listing = await client.list_multipart_uploads(Bucket=bucket, Prefix=name)
        for upload in listing.get("Uploads", []):
            if upload.get("Key") == name and "UploadId" in upload:
                await self._abort(name, upload["UploadId"])

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        try:
            await self.size(key)
        except ObjectNotFound:
            return False
        return True

    async def presigned_url(self, key: str, expires_s: int) -> str:
        """A presigned GET URL for ``key``, valid ``expires_s`` seconds (signed
        locally: no request is made)."""
        if expires_s <= 0:
            raise ValueError(f"expires_s must be positive, got {expires_s}")
        name = self._name(key)
        client = await self._open()
        with _mapped(key, "sign a URL for"):
            return await client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._location.bucket, "Key": name},
                ExpiresIn=expires_s,
            )

    async def aclose(self) -> None:
        """Close the client's connections; the store takes no more work."""
        self._closed = True
        self._client = None
        await self._exit.aclose()

    def _name(self, key: str) -> str:
        return self._location.prefix + validate_key(key)

    async def _open(self) -> S3Client:
        if self._client is not None:
            return self._client
        async with self._opening:
            if self._closed:
                raise StorageUnavailable("the object store is closed: the server is stopping")
            if self._client is None:
                session = get_session()
                self._client = await self._exit.enter_async_context(
                    session.create_client(
                        "s3",
                        endpoint_url=self._location.endpoint_url,
                        region_name=self._location.region,
                        config=self._config,
                    )
                )
            return self._client


@contextlib.contextmanager
def _mapped(key: str, doing: str) -> Iterator[None]:
    """Turn botocore's errors into the store's: missing, unavailable, or other."""
    try:
        yield
    except ClientError as exc:
        raise _from_client_error(key, doing, exc) from exc
    except NoCredentialsError as exc:
        raise StorageError(
            f"could not {doing} {key!r}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY or configure an AWS profile"
        ) from exc
    except _UNREACHABLE as exc:
        raise StorageUnavailable(
            f"the object store is unreachable ({type(exc).__name__}); retry shortly"
        ) from exc
    except BotoCoreError as exc:
        raise StorageError(f"could not {doing} {key!r}: {exc}") from exc


def _from_client_error(key: str, doing: str, exc: ClientError) -> StorageError:
    error: Mapping[str, Any] = exc.response.get("Error", {})
    metadata: Mapping[str, Any] = exc.response.get("ResponseMetadata", {})
    code = str(error.get("Code", ""))
    status = int(metadata.get("HTTPStatusCode", 0) or 0)
    if code in _MISSING_CODES or status == 404:
        return ObjectNotFound(key)
    if code in _THROTTLING_CODES or status == 503 or status >= 500:
        headers: Mapping[str, str] = metadata.get("HTTPHeaders", {})
        return StorageUnavailable(
            f"the object store is busy or failing ({code or status}); retry shortly",
            retry_after=_retry_after(headers.get("retry-after")),
        )
    return StorageError(f"could not {doing} {key!r}: {code or status} {error.get('Message', '')}")


def _retry_after(header: str | None) -> float:
    try:
        seconds = float(header) if header else 1.0
    except ValueError:
        return 1.0
    return min(max(seconds, 0.1), 60.0)
