"""The conformance kit passes a well-behaved provider and catches each kind of misbehaviour."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing

import numpy as np
import pytest

from retouch.sdk import (
    SDK_API_VERSION,
    EditRequest,
    EnhanceKind,
    EnhanceRequest,
    Event,
    HealthReport,
    InpaintRequest,
    JobContext,
    Manifest,
    Operation,
    OutpaintRequest,
    Progress,
    ProviderRejected,
    Result,
)
from retouch.sdk.testing import CHECKS, Check, FakeProvider, check_provider, sample_context
from retouch.sdk.testing import _checks as kit

Events = list[Event]


class Mutant:
    """A FakeProvider whose events pass through ``transform`` on their way out."""

    def __init__(
        self,
        transform: Callable[[EditRequest, Events], Events] = lambda _, events: events,
        *,
        manifest: Manifest | None = None,
    ) -> None:
        self.inner = FakeProvider("mutant")
        self._manifest = manifest or self.inner.manifest
        self.transform = transform

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    async def start(self, config: Mapping[str, object]) -> None:
        await self.inner.start(config)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def health(self) -> HealthReport:
        return await self.inner.health()

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        async with aclosing(self.inner.run(request, context)) as stream:
            events = [event async for event in stream]
        for event in self.transform(request, events):
            yield event


def on_result(
    change: Callable[[EditRequest, np.ndarray], np.ndarray],
) -> Callable[[EditRequest, Events], Events]:
    def transform(request: EditRequest, events: Events) -> Events:
        return [
            Result(change(request, e.image.copy())) if isinstance(e, Result) else e for e in events
        ]

    return transform


def touch_unmasked_pixel(request: EditRequest, image: np.ndarray) -> np.ndarray:
    if isinstance(request, InpaintRequest):
        image[0, 0] ^= 1
    return image


def drop_a_row_of_outpaint(request: EditRequest, image: np.ndarray) -> np.ndarray:
    return image[1:] if isinstance(request, OutpaintRequest) else image


def shift_the_original(request: EditRequest, image: np.ndarray) -> np.ndarray:
    return np.roll(image, 1, axis=1) if isinstance(request, OutpaintRequest) else image


def ignore_the_scale(request: EditRequest, image: np.ndarray) -> np.ndarray:
    upscaling = isinstance(request, EnhanceRequest) and request.kind is EnhanceKind.UPSCALE
    return request.image.copy() if upscaling else image


def crop_denoised(request: EditRequest, image: np.ndarray) -> np.ndarray:
    denoising = isinstance(request, EnhanceRequest) and request.kind is EnhanceKind.DENOISE
    return image[:, :-1] if denoising else image


def backwards(request: EditRequest, events: Events) -> Events:
    return [Progress(0.8, "late"), Progress(0.2, "early"), *events]


def progress_after_result(request: EditRequest, events: Events) -> Events:
    return [*events, Progress(1.0, "done")]


def two_results(request: EditRequest, events: Events) -> Events:
    return [*events, events[-1]]


def no_result(request: EditRequest, events: Events) -> Events:
    return events[:-1]


def foreign_event(request: EditRequest, events: Events) -> Events:
    return ["hello", *events]  # type: ignore[list-item]


def float_image(request: EditRequest, events: Events) -> Events:
    return [Result(e.image.astype(np.float32)) if isinstance(e, Result) else e for e in events]


def non_string_metadata(request: EditRequest, events: Events) -> Events:
    return [Result(e.image, {"seed": 7}) if isinstance(e, Result) else e for e in events]  # type: ignore[dict-item]


MUTANTS: list[tuple[str, Callable[[EditRequest, Events], Events], str, str]] = [
    ("unmasked pixel", on_result(touch_unmasked_pixel), "inpaint", "outside the mask changed"),
    ("outpaint size", on_result(drop_a_row_of_outpaint), "outpaint", "expected (120, 152, 3)"),
    ("shifted original", on_result(shift_the_original), "outpaint", "of the original image"),
    ("upscale size", on_result(ignore_the_scale), "enhance", "upscale x2 returned (96, 128, 3)"),
    ("denoise size", on_result(crop_denoised), "enhance", "denoise (strength 0.0) returned"),
    ("backwards", backwards, "event_stream", "progress went back from 0.8 to 0.2"),
    ("after result", progress_after_result, "event_stream", "after its Result"),
    ("two results", two_results, "event_stream", "yielded Result after its Result"),
    ("no result", no_result, "event_stream", "ended without a Result"),
    ("foreign event", foreign_event, "event_stream", "only Progress and Result"),
    ("float image", float_image, "event_stream", "dtype float32"),
    ("metadata", non_string_metadata, "event_stream", "must map str to str"),
]


async def test_the_fake_provider_passes_every_check() -> None:
    await check_provider(FakeProvider())


@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_each_check_can_run_on_its_own(check: Check) -> None:
    await check(FakeProvider(step_delay=0.001))


async def test_checks_skip_operations_the_manifest_does_not_declare() -> None:
    await check_provider(FakeProvider(operations=[Operation.ENHANCE], upscale_factors=()))
    await check_provider(FakeProvider(operations=[Operation.INPAINT], models=("a", "b")))


def test_checks_are_named_for_parametrized_ids() -> None:
    names = [str(check) for check in CHECKS]
    assert names == [
        "manifest",
        "health",
        "event_stream",
        "inpaint",
        "outpaint",
        "enhance",
        "cancellation",
        "unknown_model",
    ]
    assert all(check.description for check in CHECKS)


@pytest.mark.parametrize(
    ("transform", "check_name", "fragment"),
    [pytest.param(t, c, f, id=name) for name, t, c, f in MUTANTS],
)
async def test_a_misbehaving_provider_fails_the_check_that_covers_it(
    transform: Callable[[EditRequest, Events], Events], check_name: str, fragment: str
) -> None:
    with pytest.raises(AssertionError) as raised:
        await check_provider(Mutant(transform))
    message = str(raised.value)
    assert f"provider 'mutant' failed check {check_name!r}" in message
    assert fragment in message


async def test_check_provider_reports_every_failed_check_in_one_error() -> None:
    def both(request: EditRequest, image: np.ndarray) -> np.ndarray:
        return shift_the_original(request, touch_unmasked_pixel(request, image))

    with pytest.raises(AssertionError, match=r"failed 2 of 8 conformance checks") as raised:
        await check_provider(Mutant(on_result(both)))
    assert "(inpaint, outpaint)" in str(raised.value)


async def test_a_manifest_for_another_sdk_version_fails() -> None:
    fake = FakeProvider()
    other = Manifest(
        **{
            name: getattr(fake.manifest, name)
            for name in Manifest.__dataclass_fields__
            if name != "sdk_api_version"
        },
        sdk_api_version=SDK_API_VERSION + 1,
    )
    with pytest.raises(AssertionError, match="targets SDK API version"):
        await kit.CHECKS[0](Mutant(manifest=other))


class Custom(FakeProvider):
    """A FakeProvider with one behaviour swapped out per test."""

    def __init__(self, run: Callable[[Custom, EditRequest], AsyncGenerator[Event, None]]) -> None:
        super().__init__("custom")
        self._run = run

    async def run(self, request: EditRequest, context: JobContext) -> AsyncGenerator[Event, None]:
        async with aclosing(self._run(self, request)) as events:
            async for event in events:
                yield event


async def accepts_any_model(self: Custom, request: EditRequest) -> AsyncGenerator[Event, None]:
    async for event in FakeProvider.run(
        self, dataclasses.replace(request, model="fake"), sample_context(request)
    ):
        yield event


async def rejects_without_field(self: Custom, request: EditRequest) -> AsyncGenerator[Event, None]:
    if request.model != "fake":
        raise ProviderRejected("no such model")
    async for event in FakeProvider.run(self, request, sample_context(request)):
        yield event


async def test_accepting_an_unknown_model_fails() -> None:
    with pytest.raises(AssertionError, match="returned a Result for unknown model"):
        await _check("unknown_model")(Custom(accepts_any_model))


async def test_rejecting_an_unknown_model_must_name_the_model_field() -> None:
    with pytest.raises(AssertionError, match="naming field ''; expected 'model'"):
        await _check("unknown_model")(Custom(rejects_without_field))


async def test_accepting_an_undeclared_upscale_factor_fails() -> None:
    async def any_scale(self: Custom, request: EditRequest) -> AsyncGenerator[Event, None]:
        assert isinstance(request, EnhanceRequest)
        scale = request.scale if request.kind is EnhanceKind.UPSCALE else 1
        yield Result(np.repeat(np.repeat(request.image, scale, 0), scale, 1))

    with pytest.raises(
        AssertionError, match="returned a Result for an undeclared upscale factor 3"
    ):
        await _check("enhance")(_only(Operation.ENHANCE, Custom(any_scale)))


async def test_modifying_the_input_fails() -> None:
    async def scribble(self: Custom, request: EditRequest) -> AsyncGenerator[Event, None]:
        request.image.setflags(write=True)
        request.image[0, 0] = 0
        async for event in FakeProvider.run(self, request, sample_context(request)):
            yield event

    with pytest.raises(AssertionError, match="modified its input image"):
        await _check("event_stream")(Custom(scribble))


async def test_an_unexpected_exception_is_reported_as_a_failure() -> None:
    async def crash(self: Custom, request: EditRequest) -> AsyncGenerator[Event, None]:
        _explode()
        yield Progress(0.0, "never")

    with pytest.raises(AssertionError, match="unexpected RuntimeError: boom"):
        await _check("event_stream")(Custom(crash))


async def test_a_hung_job_fails_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit, "RUN_TIMEOUT", 0.05)

    async def hang(self: Custom, request: EditRequest) -> AsyncGenerator[Event, None]:
        await asyncio.Event().wait()
        yield Progress(0.0, "never")

    with pytest.raises(AssertionError, match="did not finish within"):
        await _check("event_stream")(Custom(hang))


async def test_health_must_answer_a_health_report() -> None:
    class Sick(FakeProvider):
        async def health(self) -> HealthReport:
            return "fine"  # type: ignore[return-value]

    with pytest.raises(AssertionError, match="failed check 'health'"):
        await _check("health")(Sick())


async def test_a_result_after_cancellation_fails() -> None:
    async def finish_anyway(self: Custom, request: EditRequest) -> AsyncGenerator[Event, None]:
        yield Progress(0.1, "working")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            yield Result(request.image.copy())

    with pytest.raises(AssertionError, match="yielded a Result after its consumer was cancelled"):
        await _check("cancellation")(Custom(finish_anyway))


async def test_swallowing_cancellation_fails() -> None:
    async def swallow(self: Custom, request: EditRequest) -> AsyncGenerator[Event, None]:
        yield Progress(0.1, "working")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return

    with pytest.raises(AssertionError, match="swallowed the cancellation"):
        await _check("cancellation")(Custom(swallow))


async def test_yielding_after_being_closed_fails() -> None:
    async def stubborn(self: Custom, request: EditRequest) -> AsyncGenerator[Event, None]:
        try:
            yield Progress(0.1, "working")
        finally:
            yield Progress(0.2, "still working")

    with pytest.raises(AssertionError, match="kept going after it was closed"):
        await _check("cancellation")(Custom(stubborn))


async def test_stopping_slowly_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit, "CLOSE_TIMEOUT", 0.05)

    async def slow(self: Custom, request: EditRequest) -> AsyncGenerator[Event, None]:
        try:
            yield Progress(0.1, "working")
            await asyncio.Event().wait()
        finally:
            await asyncio.Event().wait()

    with pytest.raises(AssertionError, match=r"took longer than 0\.05 s"):
        await _check("cancellation")(Custom(slow))


def _check(name: str) -> Check:
    return next(check for check in CHECKS if check.name == name)


def _only(operation: Operation, provider: Custom) -> Custom:
    provider._manifest = FakeProvider("custom", [operation], upscale_factors=(2,)).manifest
    return provider


def _explode() -> None:
    raise RuntimeError("boom")
