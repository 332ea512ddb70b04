"""The Stability provider: plans one v2beta call per job, sends it, reads the answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from importlib import metadata

from retouch.sdk import (
    ConfigReader,
    CostModel,
    EditRequest,
    EnhanceKind,
    Event,
    InpaintRequest,
    JobContext,
    Manifest,
    Operation,
    Progress,
    Result,
    Secret,
    Usage,
    decode_image,
    encode_png,
    upload_image,
)
from retouch.sdk.http import (
    Done,
    FilePart,
    HttpConfig,
    HttpRuntime,
    Polled,
    RemoteProvider,
    bearer,
)

from ._answers import Generation, classify, generation, job_id
from ._config import DEFAULT_BASE_URL, StabilityConfig
from ._endpoints import RESULTS_PATH, Service
from ._forms import Call, plan

NAME = "stability"
MODEL = "stable-image"
MAX_PIXELS = 16_777_216
"""Largest result: a fast 4x upscale of its largest input. Inputs are held to each
service's own limit (9,437,184 pixels for the edit services) when a job is planned."""
MOST_CREDITS = max(service.limits.credits for service in Service)
"""The dearest call a job can make (creative upscale), reserved up front."""

Form = Mapping[str, str | FilePart]


def _version() -> str:
    try:
        return metadata.version("retouch-stability")
    except metadata.PackageNotFoundError:
        return "0+unknown"


MANIFEST = Manifest(
    name=NAME,
    version=_version(),
    description=(
        "Stability AI's hosted stable-image services: inpaint (erase when there is no "
        "prompt), outpaint up to 2000 px per side, and fast, conservative or creative "
        "upscaling. Charged the Stability credits of the service called."
    ),
    operations=frozenset(Operation),
    models=(MODEL,),
    max_pixels=MAX_PIXELS,
    supports_mask=True,
    supports_outpaint=True,
    upscale_factors=(2, 4),
    enhance_kinds=frozenset({EnhanceKind.UPSCALE}),
    cost=CostModel(credits_per_provider_credit=1.0, metered_reserve=MOST_CREDITS),
    remote=True,
    quality_rank=5,
)


class StabilityProvider(RemoteProvider):
    """Stability AI's v2beta stable-image edit and upscale services, over HTTPS.

    Config: ``api_key_env`` names the environment variable holding the key (the server
    passes it as the ``api_key`` secret), the SDK's HTTP keys, and the keys of
    :class:`StabilityConfig`. Pass ``runtime`` to control time and the network in tests.
    """

    MANIFEST = MANIFEST
    HTTP_DEFAULTS = HttpConfig(base_url=DEFAULT_BASE_URL, read_timeout=120.0, total_timeout=300.0)
    """Generations answer in seconds to a minute; the read timeout leaves room for both."""

    def __init__(self, *, runtime: HttpRuntime | None = None) -> None:
        super().__init__(runtime=runtime)
        self._settings = StabilityConfig()
        self._api_key: Secret | None = None

    @property
    def settings(self) -> StabilityConfig:
        """The provider's own settings in force."""
        return self._settings

    def configure(self, read: ConfigReader) -> None:
        """Read the API key and the keys of :class:`StabilityConfig`."""
        api_key = read.secret("api_key")
        self._api_key = api_key
        self._settings = StabilityConfig.read(read)

    def auth_headers(self) -> Mapping[str, str | Secret]:
        """The bearer key, and the client id and version Stability asks integrations
        to send (they help its support trace moderation and errors to an app)."""
        assert self._api_key is not None  # configure ran first
        return {
            "authorization": bearer(self._api_key),
            "stability-client-id": self._settings.client_id,
            "stability-client-version": MANIFEST.version,
        }

    async def execute(
        self, request: EditRequest, context: JobContext
    ) -> AsyncGenerator[Event, None]:
        """One call to the service the request maps to (polled when asynchronous)."""
        call = plan(request, self._settings)
        form = await asyncio.to_thread(_form, call, request, context)
        yield Progress(0.05, f"sending to Stability {call.service.label}")
        made: Generation | None = None
        if call.service.limits.asynchronous:
            async with aclosing(self._await_job(call, form, context)) as events:
                async for event in events:
                    if isinstance(event, Generation):
                        made = event
                    else:
                        yield event
        else:
            response = await self.http.request(
                "POST",
                call.service.value,
                context=context,
                form=form,
                headers={"accept": self._accept},
                expect=self._expect,
                classify=classify,
            )
            made = generation(response)
        assert made is not None  # _await_job ends with the generation or raises
        yield Progress(0.9, "decoding the result")
        image = await asyncio.to_thread(decode_image, made.image, provider=NAME)
        details = {"service": call.service.label, "seed": made.seed, **call.notes}
        usage = Usage(provider_credits=float(call.service.limits.credits), images=1)
        yield Result(image, details, usage=usage)

    @property
    def _accept(self) -> str:
        return "image/*" if self._settings.answer == "image" else "application/json"

    @property
    def _expect(self) -> str | tuple[str, ...]:
        return ("image/",) if self._settings.answer == "image" else "application/json"

    async def _await_job(
        self, call: Call, form: Form, context: JobContext
    ) -> AsyncGenerator[Progress | Generation, None]:
        """Start an asynchronous generation, then poll its result until it is ready.

        The API offers no way to cancel a generation, so a cancelled job stops polling
        and leaves it; the results endpoint keeps it for 24 hours."""
        started = await self.http.request(
            "POST",
            call.service.value,
            context=context,
            form=form,
            headers={"accept": "application/json"},
            expect="application/json",
            classify=classify,
        )
        path = RESULTS_PATH.format(id=job_id(started))
        label = call.service.label
        yield Progress(0.1, f"Stability {label} started")

        async def check() -> Polled[Generation]:
            response = await self.http.request(
                "GET",
                path,
                context=context,
                headers={"accept": self._accept},
                ok=(200, 202),
                classify=classify,
            )
            if response.status == 202:
                return Polled(stage=f"Stability {label} in progress")
            return Polled(generation(response))

        interval = self._settings.poll_interval_s
        async for event in self.http.poll(
            check, context=context, interval=interval, max_interval=interval
        ):
            if isinstance(event, Done):
                yield event.value
                return
            # Stability reports no fraction: polls only move the stage, within 0.1..0.9.
            yield Progress(0.1 + 0.8 * event.fraction, event.stage)


def _form(call: Call, request: EditRequest, context: JobContext) -> dict[str, str | FilePart]:
    """The multipart form: the call's fields, then its image parts (CPU work)."""
    form: dict[str, str | FilePart] = dict(call.fields)
    upload = upload_image(request.image, context.image)
    form["image"] = FilePart(upload.data, f"image.{upload.extension}", upload.content_type)
    if "mask" in call.files and isinstance(request, InpaintRequest):
        # Stability's mask convention is ours: white is repainted, black kept.
        form["mask"] = FilePart(encode_png(request.mask), "mask.png", "image/png")
    return form
