"""The asynchronous client: one channel, one set of credentials, typed calls."""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from grpc import aio

from retouch.v1 import (
    account_pb2,
    account_pb2_grpc,
    common_pb2,
    image_edit_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
)
from retouch.v1 import image_edit_pb2 as pb

from ._errors import from_rpc_error
from ._events import Format, Preference
from ._inputs import (
    CHUNK_SIZE,
    UPLOAD_THRESHOLD,
    ImageSource,
    chunks,
    image_input,
    read_source,
    sniff_content_type,
)
from ._jobs import EditJob, EditRequest, Job, OnProgress, StreamCall
from ._models import (
    JOB_STATES,
    OPERATIONS,
    JobInfo,
    JobState,
    Operation,
    ProviderInfo,
    Quote,
    Upload,
    Usage,
    job_info,
    provider_info,
    quote,
    upload,
    usage,
)
from ._requests import generation_params, output_options, provider_choice
from ._results import output_path, write_file
from ._retry import Deadline, RetryPolicy, Sleep
from ._tls import TLS

DEFAULT_TARGET = "127.0.0.1:50051"
"""Where ``retouch-server`` listens by default."""
SUBJECT_HEADER = "x-retouch-subject"
UNARY_TIMEOUT = 10.0
EDIT_TIMEOUT = 300.0
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the server's largest message: an inline result
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}

T = TypeVar("T")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


class AsyncClient:
    """A typed ``grpc.aio`` client of the retouch service.

    The API key and subject are sent with every call. Unary calls get ``timeout_s``
    seconds by default, edits, uploads and downloads ``edit_timeout_s``; each method takes
    a ``timeout_s=`` of its own, which also bounds its retries. Create it in a running
    event loop, and close it (``async with`` does)::

        async with AsyncClient(api_key=key, subject="user:42") as client:
            result = await client.inpaint("photo.png", mask="mask.png")
            await result.save("out.png")

    ``with_subject`` makes a client for another subject over the same channel. Pass
    ``tls=TLS(ca_file=...)`` for a server that speaks TLS (with ``cert_file`` and
    ``key_file`` for mutual TLS), or ready-made ``credentials``; neither means plaintext.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str,
        subject: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        tls: TLS | None = None,
        timeout_s: float | None = UNARY_TIMEOUT,
        edit_timeout_s: float | None = EDIT_TIMEOUT,
        retry: RetryPolicy | None = None,
        upload_threshold: int = UPLOAD_THRESHOLD,
        chunk_size: int = CHUNK_SIZE,
        sleep: Sleep = asyncio.sleep,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if chunk_size < 1 or upload_threshold < 0:
            raise ValueError("chunk_size must be positive and upload_threshold not negative")
        if tls is not None:
            if credentials is not None:
                raise ValueError("give tls or credentials, not both")
            credentials = tls.credentials()
        channel_options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.primary_user_agent", "retouch-client/0.1"),
            *(tls.channel_options() if tls is not None else ()),
            *options,
        ]
        if credentials is None:
            self._channel = aio.insecure_channel(target, options=channel_options)
        else:
            self._channel = aio.secure_channel(target, credentials, options=channel_options)
        self._owns_channel = True
        self._target = target
        self._api_key = api_key
        self._subject = subject
        self._metadata = _metadata(api_key, subject)
        self._timeout = timeout_s
        self._edit_timeout = edit_timeout_s
        self._retry = retry or RetryPolicy()
        self._upload_threshold = upload_threshold
        self._chunk_size = chunk_size
        self._sleep = sleep
        self._edit = image_edit_pb2_grpc.ImageEditStub(self._channel)
        self._providers = providers_pb2_grpc.ProvidersStub(self._channel)
        self._account = account_pb2_grpc.AccountStub(self._channel)

    @property
    def target(self) -> str:
        """The server address."""
        return self._target

    @property
    def subject(self) -> str | None:
        """The subject calls act for; ``None`` when the tenant acts for itself."""
        return self._subject

    def with_subject(self, subject: str | None) -> AsyncClient:
        """A client acting for ``subject`` (``"user:<id>"`` or ``"guest:<id>"``) over this
        client's channel; closing it leaves the channel open."""
        other = copy.copy(self)
        other._subject = subject
        other._metadata = _metadata(self._api_key, subject)
        other._owns_channel = False
        return other

    async def close(self) -> None:
        """Close the channel, ending any call in flight."""
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self._target!r}, subject={self._subject!r})"

    # -- edits ---------------------------------------------------------------------

    def inpaint(
        self,
        image: ImageSource,
        *,
        mask: ImageSource | None = None,
        invert: bool = False,
        grow: int = 0,
        feather: int = 0,
        prompt: str = "",
        negative_prompt: str = "",
        strength: float | None = None,
        guidance_scale: float | None = None,
        steps: int | None = None,
        seed: int | None = None,
        format: Format | None = None,
        quality: int = 0,
        inline: bool = False,
        previews: bool = False,
        provider: str = "",
        model: str = "",
        prefer: Preference | None = None,
        max_cost_credits: int | None = None,
        request_id: str | None = None,
        timeout_s: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> EditJob:
        """Replace the masked region of ``image``: white (255) in ``mask`` is replaced,
        black kept; without a mask the image's transparent pixels are replaced.

        ``invert`` swaps replace and keep, ``grow`` widens the region and ``feather``
        blends its edge (pixels). Iterate the returned job for events or await it for
        the :class:`Result`. ``request_id`` (a new uuid4 when omitted) is the
        idempotency key every retry reuses. ``previews`` asks for small JPEG previews
        on the progress events (:attr:`Progress.preview`).
        """
        output = output_options(format, quality, inline, previews)
        choice = provider_choice(provider, model, prefer, max_cost_credits)
        params = generation_params(prompt, negative_prompt, strength, guidance_scale, steps, seed)
        request_id = request_id or str(uuid.uuid4())

        async def build() -> EditRequest:
            return pb.InpaintRequest(
                request_id=request_id,
                image=await self._input(image),
                mask=await self._input(mask) if mask is not None else None,
                mask_options=pb.MaskOptions(invert=invert, grow_px=grow, feather_px=feather),
                params=params,
                output=output,
                provider=choice,
            )

        return self._edit_job(request_id, build, timeout_s, on_progress)

    def outpaint(
        self,
        image: ImageSource,
        *,
        left: int = 0,
        right: int = 0,
        top: int = 0,
        bottom: int = 0,
        feather: int = 0,
        prompt: str = "",
        negative_prompt: str = "",
        strength: float | None = None,
        guidance_scale: float | None = None,
        steps: int | None = None,
        seed: int | None = None,
        format: Format | None = None,
        quality: int = 0,
        inline: bool = False,
        previews: bool = False,
        provider: str = "",
        model: str = "",
        prefer: Preference | None = None,
        max_cost_credits: int | None = None,
        request_id: str | None = None,
        timeout_s: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> EditJob:
        """Extend ``image`` by ``left``/``right``/``top``/``bottom`` pixels and fill the new
        area, blending over ``feather`` pixels. Otherwise like :meth:`inpaint`."""
        output = output_options(format, quality, inline, previews)
        choice = provider_choice(provider, model, prefer, max_cost_credits)
        params = generation_params(prompt, negative_prompt, strength, guidance_scale, steps, seed)
        request_id = request_id or str(uuid.uuid4())

        async def build() -> EditRequest:
            return pb.OutpaintRequest(
                request_id=request_id,
                image=await self._input(image),
                left=left,
                right=right,
                top=top,
                bottom=bottom,
                feather_px=feather,
                params=params,
                output=output,
                provider=choice,
            )

        return self._edit_job(request_id, build, timeout_s, on_progress)

    def enhance(
        self,
        image: ImageSource,
        *,
        upscale: int | None = None,
        denoise: bool = False,
        sharpen: bool = False,
        strength: float | None = None,
        format: Format | None = None,
        quality: int = 0,
        inline: bool = False,
        previews: bool = False,
        provider: str = "",
        model: str = "",
        prefer: Preference | None = None,
        max_cost_credits: int | None = None,
        request_id: str | None = None,
        timeout_s: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> EditJob:
        """Enlarge ``image`` by ``upscale`` (2 or 4), or ``denoise`` or ``sharpen`` it with
        ``strength`` (0..1; 0.5 when omitted); exactly one of the three. Otherwise like
        :meth:`inpaint`."""
        kinds = [upscale is not None, denoise, sharpen]
        if sum(kinds) != 1:
            raise ValueError("enhance needs exactly one of upscale=, denoise=True, sharpen=True")
        if upscale is not None:
            kind = pb.ENHANCE_KIND_UPSCALE
        elif denoise:
            kind = pb.ENHANCE_KIND_DENOISE
        else:
            kind = pb.ENHANCE_KIND_SHARPEN
        output = output_options(format, quality, inline, previews)
        choice = provider_choice(provider, model, prefer, max_cost_credits)
        request_id = request_id or str(uuid.uuid4())

        async def build() -> EditRequest:
            return pb.EnhanceRequest(
                request_id=request_id,
                image=await self._input(image),
                kind=kind,
                scale=upscale or 0,
                strength=strength,
                output=output,
                provider=choice,
            )

        return self._edit_job(request_id, build, timeout_s, on_progress)

    def watch(
        self,
        job_id: str,
        *,
        after_seq: int = 0,
        timeout_s: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> Job:
        """Re-attach to a running or finished job: its events after ``after_seq``, then
        the rest until it ends. Ending the watch does not cancel the job."""

        async def start(last_seq: int, left: float | None) -> StreamCall:
            request = pb.WatchJobRequest(job_id=job_id, after_seq=last_seq)
            return self._edit.WatchJob(request, metadata=self._metadata, timeout=left)

        return Job(
            self,
            start,
            timeout_s=self._edit_timeout if timeout_s is None else timeout_s,
            retry=self._retry,
            sleep=self._sleep,
            on_progress=on_progress,
            after_seq=after_seq,
        )

    # -- jobs, uploads and results -------------------------------------------------

    async def get_job(self, job_id: str, *, timeout_s: float | None = None) -> JobInfo:
        """One job of the caller."""
        request = pb.GetJobRequest(job_id=job_id)
        return job_info(await self._unary(self._edit.GetJob, request, timeout_s))

    async def list_jobs(
        self,
        *,
        state: JobState | str | None = None,
        limit: int = 20,
        timeout_s: float | None = None,
    ) -> list[JobInfo]:
        """The caller's newest ``limit`` jobs, newest first, optionally only those in
        ``state``; pages through the server's results as needed."""
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        wanted = JOB_STATES[JobState(state)] if state is not None else pb.JOB_STATE_UNSPECIFIED
        jobs: list[JobInfo] = []
        token = ""
        while len(jobs) < limit:
            request = pb.ListJobsRequest(
                page_size=min(100, limit - len(jobs)), page_token=token, state=wanted
            )
            page = await self._unary(self._edit.ListJobs, request, timeout_s)
            jobs += [job_info(job) for job in page.jobs]
            token = page.next_page_token
            if not token:
                break
        return jobs[:limit]

    async def cancel_job(self, job_id: str, *, timeout_s: float | None = None) -> JobInfo:
        """Cancel a queued or running job; a finished job is returned unchanged."""
        request = pb.CancelJobRequest(job_id=job_id)
        return job_info(await self._unary(self._edit.CancelJob, request, timeout_s))

    async def upload(
        self,
        source: bytes | str | os.PathLike[str],
        *,
        content_type: str = "",
        timeout_s: float | None = None,
    ) -> Upload:
        """Store ``source`` (bytes or a path) on the server for a short time, in chunks;
        edits take the returned :class:`Upload` as input. Edits upload inputs larger
        than ``upload_threshold`` by themselves."""
        return await self._upload(await read_source(source), content_type, timeout_s)

    async def download(
        self, result_id: str, *, timeout_s: float | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes of a result of the caller, chunk by chunk."""
        async for chunk in self._chunks(result_id, timeout_s):
            yield chunk.data

    async def download_to(
        self, result_id: str, path: str | os.PathLike[str], *, timeout_s: float | None = None
    ) -> Path:
        """Save a result to ``path`` (a directory gets ``<result_id><ext>``, the extension
        following the content type) and return where it went. The file appears whole or
        not at all."""
        stream = self._chunks(result_id, timeout_s)
        first = await anext(stream, None)
        extension = _EXTENSIONS.get(first.content_type, "") if first else ""

        async def data() -> AsyncIterator[bytes]:
            if first is not None:
                yield first.data
            async for chunk in stream:
                yield chunk.data

        return await write_file(output_path(path, result_id, extension), data())

    # -- providers and account -----------------------------------------------------

    async def providers(
        self, *, operation: Operation | str | None = None, timeout_s: float | None = None
    ) -> list[ProviderInfo]:
        """The providers the server loaded, with capabilities, cost and health;
        only those able to do ``operation`` when given."""
        request = providers_pb2.ListProvidersRequest(
            operation=OPERATIONS[Operation(operation)]
            if operation is not None
            else common_pb2.OPERATION_UNSPECIFIED
        )
        response = await self._unary(self._providers.ListProviders, request, timeout_s)
        return [provider_info(p) for p in response.providers]

    async def get_usage(
        self, *, subject: str | None = None, timeout_s: float | None = None
    ) -> Usage:
        """Plan, quota, credits and rate limits of this client's subject, or of
        ``subject`` (admin keys only)."""
        request = account_pb2.GetUsageRequest(subject=subject or "")
        return usage(await self._unary(self._account.GetUsage, request, timeout_s))

    async def set_plan(self, subject: str, plan: str, *, timeout_s: float | None = None) -> str:
        """Put ``subject`` on ``plan`` (admin keys only); returns the plan it is on now."""
        request = account_pb2.SetPlanRequest(subject=subject, plan=plan)
        return (await self._unary(self._account.SetPlan, request, timeout_s)).plan

    async def grant_credits(
        self,
        subject: str,
        credits: int,
        *,
        note: str = "",
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> int:
        """Add ``credits`` to ``subject``'s balance (admin keys only) and return the new
        balance. ``request_id`` (a new uuid4 when omitted) makes retries grant once."""
        request = account_pb2.GrantCreditsRequest(
            subject=subject,
            credits=credits,
            note=note,
            request_id=request_id or str(uuid.uuid4()),
        )
        return (await self._unary(self._account.GrantCredits, request, timeout_s)).credits_balance

    # -- plumbing ------------------------------------------------------------------

    def _edit_job(
        self,
        request_id: str,
        build: Callable[[], Awaitable[EditRequest]],
        timeout_s: float | None,
        on_progress: OnProgress | None,
    ) -> EditJob:
        return EditJob(
            self,
            request_id=request_id,
            build=build,
            timeout_s=self._edit_timeout if timeout_s is None else timeout_s,
            retry=self._retry,
            sleep=self._sleep,
            on_progress=on_progress,
        )

    def _open_edit(self, request: EditRequest, timeout_s: float | None) -> StreamCall:
        if isinstance(request, pb.InpaintRequest):
            return self._edit.Inpaint(request, metadata=self._metadata, timeout=timeout_s)
        if isinstance(request, pb.OutpaintRequest):
            return self._edit.Outpaint(request, metadata=self._metadata, timeout=timeout_s)
        return self._edit.Enhance(request, metadata=self._metadata, timeout=timeout_s)

    async def _quote(self, request: account_pb2.QuoteRequest, *, timeout_s: float | None) -> Quote:
        return quote(await self._unary(self._account.Quote, request, timeout_s))

    async def _input(self, source: ImageSource) -> common_pb2.ImageInput:
        return await image_input(
            source,
            upload=lambda data: self._upload(data, "", None),
            threshold=self._upload_threshold,
        )

    async def _upload(self, data: bytes, content_type: str, timeout_s: float | None) -> Upload:
        content_type = content_type or sniff_content_type(data)

        def messages() -> Iterator[pb.UploadChunk]:
            for index, piece in enumerate(chunks(data, self._chunk_size)):
                yield pb.UploadChunk(content_type=content_type if index == 0 else "", data=piece)

        async def attempt(left: float | None) -> pb.Upload:
            return await self._edit.Upload(messages(), metadata=self._metadata, timeout=left)

        deadline_s = self._edit_timeout if timeout_s is None else timeout_s
        return upload(await self._retrying(attempt, deadline_s))

    async def _chunks(self, result_id: str, timeout_s: float | None) -> AsyncIterator[pb.Chunk]:
        deadline = Deadline(self._edit_timeout if timeout_s is None else timeout_s)
        request = pb.DownloadResultRequest(result_id=result_id)
        attempt = 0
        while True:
            attempt += 1
            call = self._edit.DownloadResult(
                request, metadata=self._metadata, timeout=deadline.remaining()
            )
            received = False
            try:
                async for chunk in call:
                    received = True
                    yield chunk
                return
            except grpc.RpcError as raw:
                error = from_rpc_error(raw)
                # A retry would start again from the first byte, after some were yielded.
                wait = None if received else self._retry.delay(error, attempt)
                if wait is None or not deadline.allows(wait):
                    raise error from raw
            finally:
                call.cancel()
            await self._sleep(wait)

    async def _unary(
        self,
        method: aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout_s: float | None,
    ) -> Resp:
        async def attempt(left: float | None) -> Resp:
            return await method(request, metadata=self._metadata, timeout=left)

        return await self._retrying(attempt, self._timeout if timeout_s is None else timeout_s)

    async def _retrying(
        self, attempt: Callable[[float | None], Awaitable[T]], timeout_s: float | None
    ) -> T:
        deadline = Deadline(timeout_s)
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt(deadline.remaining())
            except grpc.RpcError as raw:
                error = from_rpc_error(raw)
                wait = self._retry.delay(error, tries)
                if wait is None or not deadline.allows(wait):
                    raise error from raw
            await self._sleep(wait)


def _metadata(api_key: str, subject: str | None) -> tuple[tuple[str, str], ...]:
    pairs = [("authorization", f"Bearer {api_key}")]
    if subject:
        pairs.append((SUBJECT_HEADER, subject))
    return tuple(pairs)
