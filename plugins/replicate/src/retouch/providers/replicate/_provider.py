"""The Replicate provider: create a prediction, wait or poll for it, download its output.

One job is one prediction. The create call asks for sync mode (``Prefer: wait=N``) so
short predictions answer in one round trip, and sets ``Cancel-After`` to the job's time
left so Replicate stops (and stops billing) a prediction nobody waits for any more.
Longer ones are polled; their logs' progress bars become :class:`Progress`. A job that
is cancelled, fails or runs out of time while its prediction still runs cancels the
prediction upstream before the generator finishes closing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from importlib import metadata

from retouch.sdk import (
    ConfigReader,
    EditRequest,
    Event,
    InpaintRequest,
    JobContext,
    Manifest,
    Operation,
    Progress,
    ProviderBadResponse,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    Result,
    Secret,
    Usage,
    decode_image,
)
from retouch.sdk.http import HttpClient, HttpRuntime, Polled, RemoteProvider, bearer

from ._config import HTTP_DEFAULTS, ModelSpec, ReplicateConfig
from ._inputs import prediction_input
from ._predictions import PROVIDER, Prediction, Status, parse_prediction

log = logging.getLogger("retouch.providers.replicate")

MAX_PIXELS = 16_777_216
"""Largest input: 4096 x 4096 (models resize to their own resolution; the result is
resized back)."""
REQUESTS_PER_MINUTE = 600.0
"""Replicate's documented limit on creating predictions."""
CANCEL_LIMIT_S = 10.0
"""How long a cancel call may run on in the background once the job has let go."""


def _version() -> str:
    try:
        return metadata.version("retouch-replicate")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_manifest(config: ReplicateConfig) -> Manifest:
    """The manifest for ``config``'s models and prices."""
    return Manifest(
        name=PROVIDER,
        version=_version(),
        description=(
            "Hosted inpainting on Replicate's predictions API: Stable Diffusion "
            "inpainting by default, any image+mask model (LaMa, SDXL, FLUX Fill) by "
            "config. Charged per second of prediction time."
        ),
        operations=frozenset({Operation.INPAINT}),
        models=tuple(spec.name for spec in config.models),
        max_pixels=MAX_PIXELS,
        supports_mask=True,
        cost=config.cost,
        remote=True,
        quality_rank=3,
        requests_per_minute=REQUESTS_PER_MINUTE,
    )


@dataclass(slots=True)
class _Tracked:
    """The job's prediction as last seen, so cleanup knows whether it still runs."""

    prediction: Prediction | None = None

    @property
    def running(self) -> bool:
        return self.prediction is not None and not self.prediction.status.finished


class ReplicateProvider(RemoteProvider):
    """Inpainting with models hosted on Replicate. See the plugin's README for config.

    The manifest's models and prices come from the config, so :attr:`manifest` is the
    instance's; :attr:`MANIFEST` is what an unconfigured provider offers.
    """

    MANIFEST = build_manifest(ReplicateConfig())
    HTTP_DEFAULTS = HTTP_DEFAULTS

    def __init__(self, *, runtime: HttpRuntime | None = None) -> None:
        super().__init__(runtime=runtime)
        self._settings = ReplicateConfig()
        self._manifest = self.MANIFEST
        self._cancels: set[asyncio.Task[None]] = set()

    @property
    def manifest(self) -> Manifest:
        """What this provider offers with its config's models and prices."""
        return self._manifest

    @property
    def settings(self) -> ReplicateConfig:
        """The provider's own settings in force."""
        return self._settings

    def configure(self, read: ConfigReader) -> None:
        """Read the API key, the sync-wait and polling settings, prices and models."""
        self._settings = ReplicateConfig.read(read)
        self._manifest = build_manifest(self._settings)

    async def aclose(self) -> None:
        """Let in-flight cancel calls finish (briefly), then close the client."""
        if self._cancels:
            await asyncio.wait(set(self._cancels), timeout=self._settings.cancel_timeout_s)
        await super().aclose()

    async def execute(
        self, request: EditRequest, context: JobContext
    ) -> AsyncGenerator[Event, None]:
        """Submit, then progress while the prediction runs, then the result (the base
        fits it to the request)."""
        if not isinstance(request, InpaintRequest):  # the manifest offers inpaint only
            raise ProviderRejected("the replicate provider only inpaints", field="operation")
        spec = self._settings.model(request.model)
        assert spec is not None  # the base checked the model (and mask) against the manifest
        client = self.http
        yield Progress(0.0, "sending to replicate")
        body: dict[str, object] = {
            "input": await asyncio.to_thread(prediction_input, spec, request, context)
        }
        if spec.version is not None:
            body["version"] = spec.version
            path = "predictions"
        else:
            path = f"models/{spec.model}/predictions"
        tracked = _Tracked()
        try:
            # Replicate has no idempotency key: a create is retried only when it
            # certainly did not arrive (a 429, no connection), never into a second
            # paid prediction.
            answer = await client.post_json(
                path,
                body,
                context=context,
                headers=self._create_headers(context),
                idempotent=False,
            )
            tracked.prediction = parse_prediction(answer.json())
            if tracked.running:
                yield Progress(_fraction(tracked.prediction), _stage(tracked.prediction, spec))
                steps = client.poll(
                    lambda: self._check(client, tracked, spec, context),
                    context=context,
                    interval=self._settings.poll_interval_s,
                )
                async with aclosing(steps):
                    async for step in steps:
                        if isinstance(step, Progress):
                            yield step
            prediction = tracked.prediction
            assert prediction is not None
            url = _succeeded(prediction, spec)
            yield Progress(0.95, "downloading the result")
            data = await self._download(client, url, context)
            image = await asyncio.to_thread(decode_image, data, provider=PROVIDER)
            yield Result(
                image,
                {
                    "prediction_id": prediction.id,
                    "model": spec.model,
                    "version": spec.version or "latest",
                    "seed": str(request.seed),
                    "predict_time_s": f"{prediction.predict_time or 0.0:.3f}",
                },
                usage=Usage(predict_seconds=prediction.predict_time, images=1),
            )
        finally:
            if tracked.running:
                assert tracked.prediction is not None
                await self._cancel_upstream(client, tracked.prediction.id)

    # --- steps ----------------------------------------------------------------------

    def auth_headers(self) -> Mapping[str, str | Secret]:
        """The bearer token; the client sends it to the API host only (never to the
        output's download host) and keeps it out of every message."""
        key = self._settings.api_key
        if key is None:
            raise ProviderUnavailable("the replicate provider has not been started")
        return {"Authorization": bearer(key)}

    def _create_headers(self, context: JobContext) -> dict[str, str | Secret]:
        headers: dict[str, str | Secret] = {}
        left = context.time_left()
        wait = self._settings.wait_s if left is None else min(self._settings.wait_s, int(left))
        if wait >= 1:
            headers["Prefer"] = f"wait={wait}"
        if left is not None:
            # Replicate cancels the prediction itself (or aborts it, free of charge,
            # if it has not started) once nobody can use its result.
            headers["Cancel-After"] = f"{max(1, math.ceil(left))}s"
        return headers

    async def _check(
        self,
        client: HttpClient,
        tracked: _Tracked,
        spec: ModelSpec,
        context: JobContext,
    ) -> Polled[Prediction]:
        assert tracked.prediction is not None
        answer = await client.get_json(f"predictions/{tracked.prediction.id}", context=context)
        prediction = parse_prediction(answer.json())
        if prediction.id != tracked.prediction.id:
            raise ProviderBadResponse(
                f"provider {PROVIDER!r} answered the poll for prediction "
                f"{tracked.prediction.id} with prediction {prediction.id}"
            )
        tracked.prediction = prediction
        if prediction.status.finished:
            return Polled(prediction)
        return Polled(fraction=_fraction(prediction), stage=_stage(prediction, spec))

    async def _download(self, client: HttpClient, url: str, context: JobContext) -> bytes:
        if url.startswith("data:"):
            return _data_url_bytes(url, client.config.max_response_bytes)
        return (await client.download(url, context=context)).body

    async def _cancel_upstream(self, client: HttpClient, prediction_id: str) -> None:
        """Cancel the prediction: sent at once from a task of its own, so it is not
        lost to the cancellation that is closing this job; waited for briefly."""
        task = asyncio.create_task(self._send_cancel(client, prediction_id))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)
        await asyncio.wait({task}, timeout=self._settings.cancel_timeout_s)

    async def _send_cancel(self, client: HttpClient, prediction_id: str) -> None:
        try:
            async with asyncio.timeout(CANCEL_LIMIT_S):
                # No job context: its deadline may be what ended the job.
                await client.request(
                    "POST",
                    f"predictions/{prediction_id}/cancel",
                    context=None,
                    retry=False,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "%s",
                client.redact(f"replicate: cancelling prediction {prediction_id} failed: {exc}"),
            )


# --- helpers ------------------------------------------------------------------------


def _fraction(prediction: Prediction) -> float:
    if prediction.status is Status.STARTING:
        return 0.05
    percent = prediction.percent
    return 0.1 if percent is None else 0.1 + 0.8 * percent / 100


def _stage(prediction: Prediction, spec: ModelSpec) -> str:
    if prediction.status is Status.STARTING:
        return f"starting {spec.model} on replicate"
    return f"running {spec.model} on replicate"


def _succeeded(prediction: Prediction, spec: ModelSpec) -> str:
    """The output URL of a finished prediction, or the error its end means."""
    if prediction.status is Status.SUCCEEDED:
        assert prediction.output_url is not None  # parse_prediction checks
        return prediction.output_url
    said = f": {prediction.error}" if prediction.error else ""
    if prediction.content_filtered:
        raise ProviderRejected(
            f"the {spec.model} model's safety checker refused the result of prediction "
            f"{prediction.id}{said}; try another prompt or image",
            field="prompt",
        )
    if prediction.status is Status.ABORTED:
        raise ProviderTimeout(
            f"replicate aborted prediction {prediction.id}: it could not start before the "
            f"job's deadline"
        )
    if prediction.status is Status.CANCELED:
        raise ProviderUnavailable(f"replicate prediction {prediction.id} was canceled{said}")
    raise ProviderUnavailable(f"replicate prediction {prediction.id} failed{said}")


def _data_url_bytes(url: str, max_bytes: int) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64") or not header[5:].startswith("image/"):
        raise ProviderBadResponse(
            f"provider {PROVIDER!r} returned a data URL that is not a base64 image "
            f"({header[:60]!r})"
        )
    if len(payload) * 3 // 4 > max_bytes:
        raise ProviderBadResponse(
            f"provider {PROVIDER!r} returned an output over the {max_bytes} byte cap"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderBadResponse(
            f"provider {PROVIDER!r} returned a data URL that is not valid base64 ({exc})"
        ) from None
