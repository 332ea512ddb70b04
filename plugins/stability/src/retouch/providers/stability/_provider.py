"""The Stability provider: plans one v2beta call per job, sends it, reads the answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from importlib import metadata

from retouch.sdk import (
    ConfigReader,
    CostModel,
    EditRequest,
    Event,
    Health,
    HealthReport,
    InpaintRequest,
    JobContext,
    Manifest,
    Operation,
    Progress,
    ProviderRejected,
    Result,
    RGBImage,
    Usage,
    decode_image,
    encode_png,
    fit_to_request,
    upload_image,
)
from retouch.sdk.http import Done, FilePart, HttpClient, HttpConfig, HttpRuntime, Polled, bearer

from ._answers import Generation, classify, generation, job_id
from ._config import DEFAULT_BASE_URL, StabilityConfig
from ._endpoints import RESULTS_PATH, Service
from ._forms import Call, plan

NAME = "stability"
MODEL = "stable-image"
MAX_PIXELS = 9_437_184
"""The edit services' largest input (the upscalers take less; each call checks its own)."""
MOST_CREDITS = max(service.limits.credits for service in Service)
"""The dearest call a job can make (creative upscale), reserved up front."""


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
    cost=CostModel(credits_per_provider_credit=1.0, metered_reserve=MOST_CREDITS),
    remote=True,
    quality_rank=5,
)

DEFAULT_HTTP = HttpConfig(base_url=DEFAULT_BASE_URL, read_timeout=120.0, total_timeout=300.0)
"""Generations answer in seconds to a minute; the read timeout leaves room for both."""


class StabilityProvider:
    """Stability AI's v2beta stable-image edit and upscale services, over HTTPS.

    Config: ``api_key_env`` names the environment variable holding the key (the server
    passes it as the ``api_key`` secret), the SDK's HTTP keys, and the keys of
    :class:`StabilityConfig`. ``runtime`` injects the clock, sleep and resolver (tests).
    """

    def __init__(self, *, runtime: HttpRuntime | None = None) -> None:
        self._runtime = runtime
        self._config = StabilityConfig()
        self._client: HttpClient | None = None

    @property
    def manifest(self) -> Manifest:
        """What this provider offers."""
        return MANIFEST

    @property
    def config(self) -> StabilityConfig:
        """The provider's own settings in force."""
        return self._config

    async def start(self, config: Mapping[str, object]) -> None:
        """Validate ``config`` (ValueError names the bad key) and open the HTTP session."""
        read = ConfigReader(NAME, config)
        http = HttpConfig.from_config(read, defaults=DEFAULT_HTTP)
        api_key = read.secret("api_key")
        assert api_key is not None  # required=True raises instead
        settings = StabilityConfig.read(read)
        read.finish()
        await self.aclose()
        self._config = settings
        self._client = HttpClient(
            NAME,
            http,
            headers={"authorization": bearer(api_key), "stability-client-id": settings.client_id},
            runtime=self._runtime,
        )
        await self._client.start()

    async def aclose(self) -> None:
        """Close the HTTP session."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def health(self) -> HealthReport:
        """Healthy once started; the server's breaker tracks how calls actually go."""
        if self._client is None:
            return HealthReport(Health.UNAVAILABLE, "not started")
        return HealthReport(Health.HEALTHY)

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        """One call to the service the request maps to, then the fitted result."""
        client = self._started()
        self._check(request)
        call = plan(request, self._config)
        form = await asyncio.to_thread(self._form, call, request, context)
        yield Progress(0.05, f"sending to Stability {call.service.label}")
        if call.service.limits.asynchronous:
            found: Generation | None = None
            async for event in self._await_job(client, call, form, context):
                if isinstance(event, Generation):
                    found = event
                else:
                    yield event
            assert found is not None  # _await_job ends with the generation or raises
            made = found
        else:
            response = await client.request(
                "POST",
                call.service.value,
                context=context,
                form=form,
                headers={"accept": self._accept},
                expect=self._expect,
                classify=classify,
            )
            made = generation(response)
        yield Progress(0.9, "decoding the result")
        image = await asyncio.to_thread(_fitted, request, made.image)
        details = {"service": call.service.label, "seed": made.seed, **call.notes}
        usage = Usage(provider_credits=float(call.service.limits.credits), images=1)
        yield Result(image, details, usage=usage)

    @property
    def _accept(self) -> str:
        return "image/*" if self._config.answer == "image" else "application/json"

    @property
    def _expect(self) -> str | tuple[str, ...]:
        return ("image/",) if self._config.answer == "image" else "application/json"

    async def _await_job(
        self,
        client: HttpClient,
        call: Call,
        form: Mapping[str, str | FilePart],
        context: JobContext,
    ) -> AsyncGenerator[Progress | Generation, None]:
        """Start an asynchronous generation and poll its result until it is ready."""
        started = await client.request(
            "POST",
            call.service.value,
            context=context,
            form=form,
            headers={"accept": "application/json"},
            expect="application/json",
            classify=classify,
        )
        path = RESULTS_PATH.format(id=job_id(started))
        yield Progress(0.1, f"Stability {call.service.label} started")

        async def check() -> Polled[Generation]:
            response = await client.request(
                "GET",
                path,
                context=context,
                headers={"accept": self._accept},
                ok=(200, 202),
                classify=classify,
            )
            if response.status == 202:
                return Polled(stage=f"Stability {call.service.label} in progress")
            return Polled(generation(response))

        interval = self._config.poll_interval_s
        async for event in client.poll(
            check, context=context, interval=interval, max_interval=interval
        ):
            if isinstance(event, Done):
                yield event.value
                return
            # Stability reports no fraction: polls only move the stage, within 0.1..0.9.
            yield Progress(0.1 + 0.8 * event.fraction, event.stage)

    def _started(self) -> HttpClient:
        if self._client is None:
            raise RuntimeError("the stability provider was not started")
        return self._client

    def _check(self, request: EditRequest) -> None:
        MANIFEST.check_image(request.image)
        if request.model != MODEL:
            raise ProviderRejected(
                f"unknown model {request.model!r}; the stability provider offers {MODEL!r}",
                field="model",
            )
        if isinstance(request, InpaintRequest) and request.mask.shape != request.image.shape[:2]:
            raise ProviderRejected(
                f"the mask must be {request.image.shape[:2]}, got {request.mask.shape}",
                field="mask",
            )

    def _form(
        self, call: Call, request: EditRequest, context: JobContext
    ) -> dict[str, str | FilePart]:
        """The multipart form: the call's fields, then its image parts."""
        form: dict[str, str | FilePart] = dict(call.fields)
        upload = upload_image(request.image, context.image)
        form["image"] = FilePart(upload.data, f"image.{upload.extension}", upload.content_type)
        if "mask" in call.files and isinstance(request, InpaintRequest):
            # Stability's mask convention is ours: white is repainted, black kept.
            form["mask"] = FilePart(encode_png(request.mask), "mask.png", "image/png")
        return form


def _fitted(request: EditRequest, data: bytes) -> RGBImage:
    return fit_to_request(request, decode_image(data, provider=NAME))
