"""A base class that makes a hosted provider small: config, one HTTP client, request
checks and results fitted to the request."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import ClassVar

from .._config import ConfigReader, ProviderNotConfigured
from .._context import JobContext
from .._errors import ProviderRejected
from .._events import Event, Result
from .._images import fit_to_request
from .._manifest import EnhanceKind, Manifest
from .._provider import Health, HealthReport
from .._requests import EditRequest, EnhanceRequest, InpaintRequest, OutpaintRequest
from .._secrets import Secret
from ._client import HttpClient
from ._settings import HttpConfig, HttpRuntime

SERVER_KEYS = ("api_key_env",)
"""Config keys the server interprets itself and passes along; never refused."""


class RemoteProvider(abc.ABC):
    """The scaffolding of a provider that calls a hosted API.

    A subclass sets :attr:`MANIFEST` (``remote=True``) and :attr:`HTTP_DEFAULTS` (its
    API's ``base_url``, download hosts, timeouts), reads its own config keys in
    :meth:`configure`, names its auth headers in :meth:`auth_headers`, and writes
    :meth:`execute`: the calls for one job, yielding Progress and one Result. The base:

    - ``start(config)`` reads the standard HTTP keys (see
      :meth:`HttpConfig.from_config`), then :meth:`configure`, refuses unknown keys,
      and opens one :class:`HttpClient` (``self.http``) for every job;
    - ``run`` rejects what the manifest does not offer (operation, model, size,
      upscale factor) before any call, and fits each Result to the request (resized
      to the expected size, unmasked or original pixels put back exactly unless
      :attr:`JobContext.host_composites` says the host does that);
    - ``aclose`` closes the client; ``health`` is healthy once started.

    Pass ``runtime`` (clock, sleep, jitter, address policy, resolver) to control
    time and the network in tests.
    """

    MANIFEST: ClassVar[Manifest]
    HTTP_DEFAULTS: ClassVar[HttpConfig | None] = None
    """The API's defaults; ``None`` makes ``base_url`` a required config key."""

    def __init__(self, *, runtime: HttpRuntime | None = None) -> None:
        self._runtime = runtime
        self._http: HttpClient | None = None

    @property
    def manifest(self) -> Manifest:
        """What this provider offers."""
        return self.MANIFEST

    @property
    def http(self) -> HttpClient:
        """The provider's HTTP client (after :meth:`start`)."""
        if self._http is None:
            raise RuntimeError(f"provider {self.MANIFEST.name!r} is not started")
        return self._http

    async def start(self, config: Mapping[str, object]) -> None:
        """Validate ``config`` (``ValueError`` names each bad key) and open the client.

        An empty config raises :class:`~retouch.sdk.ProviderNotConfigured`: a hosted
        provider stays off until its ``[providers.<name>]`` table exists."""
        name = self.MANIFEST.name
        if not set(config) - set(SERVER_KEYS):
            raise ProviderNotConfigured(
                f"provider {name!r} is not configured; add a [providers.{name}] table to turn it on"
            )
        read = ConfigReader(name, config)
        read.mark_read(*SERVER_KEYS)
        http_config = HttpConfig.from_config(read, defaults=self.HTTP_DEFAULTS)
        self.configure(read)
        read.finish()
        await self.aclose()
        self._http = HttpClient(
            self.MANIFEST.name,
            http_config,
            headers=self.auth_headers(),
            runtime=self._runtime,
        )
        await self._http.start()

    def configure(self, read: ConfigReader) -> None:  # noqa: B027 - an optional hook
        """Read the plugin's own config keys (the API key, model names...)."""

    def auth_headers(self) -> Mapping[str, str | Secret]:
        """Headers every call carries, such as ``Authorization``; secrets stay secret."""
        return {}

    async def aclose(self) -> None:
        """Close the HTTP client."""
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def health(self) -> HealthReport:
        """Healthy once started (override to ask the API)."""
        if self._http is None or not self._http.started:
            return HealthReport(Health.UNAVAILABLE, "not started")
        return HealthReport(Health.HEALTHY)

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        """Check ``request``, then :meth:`execute`'s events, each Result fitted."""
        self.check(request)
        async with aclosing(self.execute(request, context)) as events:
            async for event in events:
                if isinstance(event, Result):
                    image = fit_to_request(
                        request, event.image, put_back=not context.host_composites
                    )
                    yield Result(image, event.metadata, event.usage)
                    return
                yield event

    def check(self, request: EditRequest) -> None:
        """Raise :class:`~retouch.sdk.ProviderRejected` for what the manifest does not
        offer (the operation, the model, the size, the enhance kind, the upscale
        factor) and for a mask that does not fit the image. It reads :attr:`manifest`,
        so a provider whose models come from its config overrides that property."""
        manifest = self.manifest
        name = manifest.name
        if not manifest.can(request.operation):
            raise ProviderRejected(
                f"the {name} provider does not {request.operation.value}", field="operation"
            )
        models = manifest.models_for(request.task)
        if request.model not in models:
            raise ProviderRejected(
                f"unknown model {request.model!r}; the {name} provider offers {', '.join(models)}",
                field="model",
            )
        manifest.check_image(request.image)
        if isinstance(request, InpaintRequest) and (
            request.mask.dtype != "uint8" or request.mask.shape != request.image.shape[:2]
        ):
            raise ProviderRejected(
                f"the mask must be uint8 of shape {request.image.shape[:2]}, got "
                f"{request.mask.dtype} {request.mask.shape}",
                field="mask",
            )
        if isinstance(request, OutpaintRequest | EnhanceRequest):
            width, height = request.output_size
            if width * height > manifest.max_pixels:
                raise ProviderRejected(
                    f"the result would be {width} x {height}, over the {name} provider's "
                    f"{manifest.max_pixels} pixels",
                    field="padding" if isinstance(request, OutpaintRequest) else "scale",
                )
        if isinstance(request, EnhanceRequest) and request.kind not in manifest.enhance_kinds:
            raise ProviderRejected(
                f"the {name} provider does not {request.kind.value}", field="kind"
            )
        if (
            isinstance(request, EnhanceRequest)
            and request.kind is EnhanceKind.UPSCALE
            and request.scale not in manifest.upscale_factors
        ):
            factors = " or ".join(map(str, manifest.upscale_factors)) or "nothing"
            raise ProviderRejected(
                f"cannot upscale by {request.scale}; the {name} provider upscales by {factors}",
                field="scale",
            )

    @abc.abstractmethod
    def execute(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        """The API calls for one checked job: Progress events, then one Result (its
        image at any size; the base fits it). Raise ProviderError subclasses."""
