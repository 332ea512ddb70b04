"""Conformance checks every provider should pass, run from the provider's own tests.

Each check exercises only the operations the provider's manifest declares, on small
deterministic inputs (see :func:`sample_image`), and raises :class:`AssertionError`
naming the provider, the check and what to fix. Pass a *started* provider; a hosted
one is started against a fake of its API (see :class:`FakeHttpServer`), and
``contexts`` may build each job's context (say, with a deadline on a manual clock)::

    from retouch.sdk.testing import CHECKS, check_provider

    async def test_conforms(provider):
        await check_provider(provider)

    @pytest.mark.parametrize("check", CHECKS, ids=str)
    async def test_each_check(provider, check):
        await check(provider)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field

import numpy as np

from .._errors import ProviderRejected
from .._events import Event, Progress, Result
from .._manifest import SDK_API_VERSION, CostModel, EnhanceKind, Manifest, Operation
from .._provider import Health, HealthReport, Provider
from .._requests import (
    EditRequest,
    EnhanceRequest,
    InpaintRequest,
    OutpaintRequest,
    Padding,
)
from ._contexts import ContextFactory, sample_context
from ._images import SAMPLE_HEIGHT, SAMPLE_WIDTH, sample_image, sample_mask

RUN_TIMEOUT = 60.0
"""Seconds one job may take before a check fails it, so a hung provider cannot hang
the suite."""

CLOSE_TIMEOUT = 2.0
"""Seconds a job may take to stop once it is cancelled or closed."""

UNKNOWN_MODEL = "retouch-conformance-no-such-model"
SEED = 1234
OUTPAINT_PADDINGS = (Padding(left=16, right=8, bottom=24), Padding(top=32))


@dataclass(frozen=True, slots=True)
class Check:
    """One named conformance check. Await ``check(provider)`` to run it."""

    name: str
    description: str
    func: Callable[[Provider, ContextFactory], Awaitable[None]] = field(repr=False, compare=False)

    async def __call__(self, provider: Provider, *, contexts: ContextFactory | None = None) -> None:
        """Run the check; raise :class:`AssertionError` naming provider and check.

        ``contexts`` builds the :class:`~retouch.sdk.JobContext` of each job the check
        runs (default :func:`sample_context`)."""
        try:
            await self.func(provider, sample_context if contexts is None else contexts)
        except asyncio.CancelledError:
            raise
        except AssertionError as exc:
            raise AssertionError(
                f"provider {_name(provider)!r} failed check {self.name!r}: {exc}"
            ) from exc
        except Exception as exc:
            raise AssertionError(
                f"provider {_name(provider)!r} failed check {self.name!r}: "
                f"unexpected {type(exc).__name__}: {exc}"
            ) from exc

    def __str__(self) -> str:
        return self.name


async def check_provider(provider: Provider, *, contexts: ContextFactory | None = None) -> None:
    """Run every check in :data:`CHECKS` and report all failures in one AssertionError."""
    failures: list[tuple[str, AssertionError]] = []
    for check in CHECKS:
        try:
            await check(provider, contexts=contexts)
        except AssertionError as exc:
            failures.append((check.name, exc))
    if failures:
        names = ", ".join(name for name, _ in failures)
        details = "\n".join(f"- {exc}" for _, exc in failures)
        raise AssertionError(
            f"provider {_name(provider)!r} failed {len(failures)} of {len(CHECKS)} "
            f"conformance checks ({names}):\n{details}"
        ) from failures[0][1]


# --- the checks ---------------------------------------------------------------------


async def _check_manifest(provider: Provider, _contexts: ContextFactory) -> None:
    assert isinstance(provider, Provider), (
        "not a Provider: it needs manifest, start, aclose, health and run"
    )
    manifest = provider.manifest
    assert isinstance(manifest, Manifest), (
        f"manifest is a {type(manifest).__name__}, not a Manifest"
    )
    assert manifest.sdk_api_version == SDK_API_VERSION, (
        f"manifest targets SDK API version {manifest.sdk_api_version}; this SDK speaks "
        f"{SDK_API_VERSION}"
    )
    assert manifest.operations, "manifest declares no operations"
    assert all(isinstance(op, Operation) for op in manifest.operations), (
        f"operations must be Operation members, got {sorted(map(repr, manifest.operations))}"
    )
    assert manifest.models, "manifest names no models"
    models: tuple[object, ...] = manifest.models
    assert all(isinstance(m, str) and m for m in models), (
        f"model names must be non-empty strings, got {manifest.models!r}"
    )
    assert len(set(manifest.models)) == len(manifest.models), (
        f"model names repeat: {manifest.models!r}"
    )
    assert manifest.max_pixels >= SAMPLE_HEIGHT * SAMPLE_WIDTH, (
        f"max_pixels {manifest.max_pixels} is too small for any real image"
    )
    if manifest.upscale_factors:
        assert manifest.can(Operation.ENHANCE), "upscale factors declared without enhance"
        assert len(set(manifest.upscale_factors)) == len(manifest.upscale_factors), (
            f"upscale factors repeat: {manifest.upscale_factors!r}"
        )
    assert isinstance(manifest.cost, CostModel), "cost must be a CostModel"
    estimate: object = manifest.cost.estimate(SAMPLE_WIDTH, SAMPLE_HEIGHT)
    assert isinstance(estimate, int), f"cost estimate {estimate!r} is not an int"
    assert estimate >= 0, f"cost estimate {estimate!r} is negative"
    assert provider.manifest == manifest, "manifest changes between reads"


async def _check_health(provider: Provider, _contexts: ContextFactory) -> None:
    report = await provider.health()
    assert isinstance(report, HealthReport), f"health() returned {report!r}, not a HealthReport"
    assert isinstance(report.health, Health), f"health() reported {report.health!r}"


async def _check_event_stream(provider: Provider, contexts: ContextFactory) -> None:
    for request in _default_requests(provider.manifest):
        await _run_to_result(provider, contexts, request)


async def _check_inpaint(provider: Provider, contexts: ContextFactory) -> None:
    manifest = provider.manifest
    if not manifest.can(Operation.INPAINT):
        return
    image, mask = sample_image(), sample_mask()
    keep = mask == 0
    for model in manifest.models_for("inpaint"):
        result = await _run_to_result(provider, contexts, InpaintRequest(image, mask, model, SEED))
        out = result.image
        assert out.shape == image.shape, (
            f"model {model!r}: inpaint result is {out.shape}; it must match the input {image.shape}"
        )
        changed = np.argwhere((out != image).any(axis=2) & keep)
        assert changed.size == 0, (
            f"model {model!r}: {len(changed)} pixels outside the mask changed (first at "
            f"row {changed[0][0]}, column {changed[0][1]}); unmasked pixels must come back "
            f"bit-identical: composite the result with retouch.sdk.composite"
        )


async def _check_outpaint(provider: Provider, contexts: ContextFactory) -> None:
    manifest = provider.manifest
    if not manifest.can(Operation.OUTPAINT):
        return
    image = sample_image()
    height, width = image.shape[:2]
    for model in manifest.models_for("outpaint"):
        for padding in OUTPAINT_PADDINGS:
            request = OutpaintRequest(image, padding, model, SEED)
            out = (await _run_to_result(provider, contexts, request)).image
            out_width, out_height = request.output_size
            assert out.shape == (out_height, out_width, 3), (
                f"model {model!r}, {padding}: outpaint result is {out.shape}; expected "
                f"{(out_height, out_width, 3)}"
            )
            region = out[padding.top : padding.top + height, padding.left : padding.left + width]
            changed = np.argwhere((region != image).any(axis=2))
            assert changed.size == 0, (
                f"model {model!r}, {padding}: {len(changed)} pixels of the original image "
                f"changed (first at row {changed[0][0]}, column {changed[0][1]} of the "
                f"original); the original must come back bit-identical inside the new canvas"
            )


async def _check_enhance(provider: Provider, contexts: ContextFactory) -> None:
    manifest = provider.manifest
    if not manifest.can(Operation.ENHANCE):
        return
    image = sample_image()
    height, width = image.shape[:2]
    model = manifest.models_for("enhance.upscale")[0]
    for factor in manifest.upscale_factors:
        request = EnhanceRequest(image, EnhanceKind.UPSCALE, model, SEED, scale=factor)
        out = (await _run_to_result(provider, contexts, request)).image
        expected = (height * factor, width * factor, 3)
        assert out.shape == expected, f"upscale x{factor} returned {out.shape}; expected {expected}"
    undeclared = next(f for f in range(2, 100) if f not in manifest.upscale_factors)
    request = EnhanceRequest(image, EnhanceKind.UPSCALE, model, SEED, scale=undeclared)
    if EnhanceKind.UPSCALE in manifest.enhance_kinds:
        await _expect_rejected(
            provider, contexts, request, "scale", f"an undeclared upscale factor {undeclared}"
        )
    else:
        await _expect_rejected(provider, contexts, request, "kind", "upscale, not offered")
    for kind in (EnhanceKind.DENOISE, EnhanceKind.SHARPEN):
        if kind not in manifest.enhance_kinds:
            request = EnhanceRequest(image, kind, model, SEED)
            await _expect_rejected(
                provider, contexts, request, "kind", f"{kind.value}, which it does not offer"
            )
            continue
        for strength in (0.0, 0.5, 1.0):
            task_model = manifest.models_for(f"enhance.{kind.value}")[0]
            request = EnhanceRequest(image, kind, task_model, SEED, strength=strength)
            out = (await _run_to_result(provider, contexts, request)).image
            assert out.shape == image.shape, (
                f"{kind.value} (strength {strength}) returned {out.shape}; it must keep the "
                f"input's {image.shape}"
            )


async def _check_unknown_model(provider: Provider, contexts: ContextFactory) -> None:
    for request in _default_requests(provider.manifest, model=UNKNOWN_MODEL):
        await _expect_rejected(
            provider, contexts, request, "model", f"unknown model {UNKNOWN_MODEL!r}"
        )


async def _check_cancellation(provider: Provider, contexts: ContextFactory) -> None:
    for request in _default_requests(provider.manifest):
        await _close_after_first_event(provider, contexts, request)
        await _cancel_consumer_after_first_event(provider, contexts, request)


CHECKS: tuple[Check, ...] = (
    Check("manifest", "the manifest is valid for this SDK", _check_manifest),
    Check("health", "health() answers a HealthReport", _check_health),
    Check(
        "event_stream",
        "run() yields monotonic Progress in 0..1, then exactly one Result, last",
        _check_event_stream,
    ),
    Check(
        "inpaint",
        "every model keeps the input's shape and leaves unmasked pixels bit-identical",
        _check_inpaint,
    ),
    Check(
        "outpaint",
        "every model returns output_size and leaves the original region bit-identical",
        _check_outpaint,
    ),
    Check(
        "enhance",
        "upscale sizes match each declared factor, others are rejected; denoise and "
        "sharpen keep the size",
        _check_enhance,
    ),
    Check(
        "cancellation",
        "a cancelled or closed job stops within CLOSE_TIMEOUT without a Result",
        _check_cancellation,
    ),
    Check(
        "unknown_model",
        "an unknown model is rejected with ProviderRejected(field='model')",
        _check_unknown_model,
    ),
)
"""Every conformance check, in the order :func:`check_provider` runs them."""


# --- helpers ------------------------------------------------------------------------


def _name(provider: Provider) -> str:
    try:
        return provider.manifest.name
    except Exception:
        return type(provider).__name__


def _default_requests(manifest: Manifest, model: str | None = None) -> list[EditRequest]:
    """One ordinary request per declared operation, with ``model`` or the task's default."""

    def pick(task: str) -> str:
        return manifest.models_for(task)[0] if model is None else model

    image = sample_image()
    requests: list[EditRequest] = []
    if manifest.can(Operation.INPAINT):
        requests.append(InpaintRequest(image, sample_mask(), pick("inpaint"), SEED))
    if manifest.can(Operation.OUTPAINT):
        requests.append(OutpaintRequest(image, OUTPAINT_PADDINGS[0], pick("outpaint"), SEED))
    if manifest.can(Operation.ENHANCE):
        if manifest.can_enhance(EnhanceKind.UPSCALE):
            factor = manifest.upscale_factors[0]
            upscale = pick("enhance.upscale")
            requests.append(EnhanceRequest(image, EnhanceKind.UPSCALE, upscale, SEED, scale=factor))
        else:
            kind = next(
                k for k in (EnhanceKind.SHARPEN, EnhanceKind.DENOISE) if manifest.can_enhance(k)
            )
            requests.append(EnhanceRequest(image, kind, pick(f"enhance.{kind.value}"), SEED))
    return requests


def _describe(request: EditRequest) -> str:
    if isinstance(request, EnhanceRequest):
        return f"enhance/{request.kind.value} (model {request.model!r})"
    return f"{request.operation.value} (model {request.model!r})"


def _describe_event(event: object) -> str:
    if isinstance(event, Progress):
        return f"Progress({event.fraction}, {event.stage!r})"
    if isinstance(event, Result):
        return "Result"
    return repr(event)[:80]


async def _events(
    provider: Provider, contexts: ContextFactory, request: EditRequest
) -> AsyncGenerator[Event, None]:
    """``provider.run(request, context)`` as an async generator that closes the
    provider's own."""
    iterator = provider.run(request, contexts(request))
    assert hasattr(iterator, "__anext__"), (
        f"run() returned {type(iterator).__name__}; write it as an async generator"
    )
    try:
        async for event in iterator:
            yield event
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


async def _run_to_result(
    provider: Provider, contexts: ContextFactory, request: EditRequest
) -> Result:
    """Run one job to its end, checking the event grammar, the result and the input."""
    what = _describe(request)
    before = request.image.copy()
    result: Result | None = None
    last = 0.0
    try:
        async with (
            asyncio.timeout(RUN_TIMEOUT),
            aclosing(_events(provider, contexts, request)) as events,
        ):
            async for event in events:
                assert result is None, (
                    f"{what}: yielded {_describe_event(event)} after its Result; the "
                    f"Result must be the last event"
                )
                if isinstance(event, Result):
                    result = event
                    continue
                assert isinstance(event, Progress), (
                    f"{what}: yielded {_describe_event(event)}; only Progress and Result "
                    f"events are allowed"
                )
                assert 0.0 <= event.fraction <= 1.0, (
                    f"{what}: progress fraction {event.fraction} is outside 0..1"
                )
                assert event.fraction >= last, (
                    f"{what}: progress went back from {last} to {event.fraction}"
                )
                last = event.fraction
    except TimeoutError:
        raise AssertionError(f"{what}: did not finish within {RUN_TIMEOUT} s") from None
    assert result is not None, f"{what}: the event stream ended without a Result"
    image = result.image
    assert isinstance(image, np.ndarray), f"{what}: Result.image is a {type(image).__name__}"
    assert image.dtype == np.uint8, f"{what}: Result.image has dtype {image.dtype}, not uint8"
    assert image.ndim == 3, f"{what}: Result.image has shape {image.shape}; expected RGB"
    assert image.shape[2] == 3, f"{what}: Result.image has shape {image.shape}; expected RGB"
    metadata: object = result.metadata
    assert isinstance(metadata, Mapping), f"{what}: Result.metadata is not a Mapping"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()), (
        f"{what}: Result.metadata must map str to str"
    )
    assert np.array_equal(request.image, before), f"{what}: run() modified its input image"
    return result


async def _expect_rejected(
    provider: Provider,
    contexts: ContextFactory,
    request: EditRequest,
    field_name: str,
    what: str,
) -> None:
    """Run ``request`` and require ProviderRejected(field=field_name) before any Result."""
    try:
        async with (
            asyncio.timeout(RUN_TIMEOUT),
            aclosing(_events(provider, contexts, request)) as events,
        ):
            async for event in events:
                assert not isinstance(event, Result), (
                    f"{_describe(request)}: returned a Result for {what}; raise "
                    f"ProviderRejected(field={field_name!r})"
                )
    except ProviderRejected as exc:
        if exc.field != field_name:
            raise AssertionError(
                f"{_describe(request)}: rejected {what} naming field {exc.field!r}; "
                f"expected {field_name!r}"
            ) from exc
        return
    except TimeoutError:
        raise AssertionError(
            f"{_describe(request)}: did not finish within {RUN_TIMEOUT} s"
        ) from None
    raise AssertionError(
        f"{_describe(request)}: accepted {what}; raise ProviderRejected(field={field_name!r})"
    )


async def _close_after_first_event(
    provider: Provider, contexts: ContextFactory, request: EditRequest
) -> None:
    """Close the stream while it is suspended at its first event, as a consumer that
    stops reading does; the generator must finish closing promptly and quietly."""
    what = _describe(request)
    events = _events(provider, contexts, request)
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            first = await anext(events)
    except TimeoutError:
        await events.aclose()
        raise AssertionError(f"{what}: no first event within {RUN_TIMEOUT} s") from None
    except StopAsyncIteration:
        raise AssertionError(f"{what}: the event stream ended without a Result") from None
    if isinstance(first, Result):
        await events.aclose()
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await events.aclose()
    except TimeoutError:
        raise AssertionError(
            f"{what}: closing the event stream took longer than {CLOSE_TIMEOUT} s; stop "
            f"work promptly when the generator is closed"
        ) from None
    except RuntimeError as exc:
        raise AssertionError(
            f"{what}: the generator kept going after it was closed ({exc}); do not catch "
            f"GeneratorExit or yield from a finally block"
        ) from exc


async def _cancel_consumer_after_first_event(
    provider: Provider, contexts: ContextFactory, request: EditRequest
) -> None:
    """Cancel the task consuming the stream after its first event; no Result may follow
    and the task must end cancelled within CLOSE_TIMEOUT."""
    what = _describe(request)
    first = asyncio.Event()
    seen: list[Event] = []
    after_cancel: list[Event] = []
    cancel_sent = False

    async def consume() -> None:
        async with aclosing(_events(provider, contexts, request)) as events:
            async for event in events:
                (after_cancel if cancel_sent else seen).append(event)
                first.set()

    task = asyncio.create_task(consume())
    waiter = asyncio.create_task(first.wait())
    await asyncio.wait({task, waiter}, timeout=RUN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        # Finished (or failed) before it could be cancelled: nothing to observe here;
        # a failure is the business of the other checks.
        if not task.cancelled():
            task.exception()
        return
    if not first.is_set():
        task.cancel()
        await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
        raise AssertionError(f"{what}: no first event within {RUN_TIMEOUT} s")
    if any(isinstance(event, Result) for event in seen):
        await asyncio.wait({task}, timeout=RUN_TIMEOUT)
        return
    cancel_sent = True
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=RUN_TIMEOUT)
        raise AssertionError(
            f"{what}: still running {CLOSE_TIMEOUT} s after its consumer was cancelled; "
            f"stop work promptly when cancelled (run blocking work with "
            f"retouch.sdk.run_with_progress)"
        )
    results = [event for event in after_cancel if isinstance(event, Result)]
    assert not results, f"{what}: yielded a Result after its consumer was cancelled"
    if not task.cancelled():
        error = task.exception()
        assert error is not None, (
            f"{what}: swallowed the cancellation and ended normally; re-raise "
            f"asyncio.CancelledError"
        )
        raise AssertionError(
            f"{what}: raised {type(error).__name__} when cancelled: {error}"
        ) from error
