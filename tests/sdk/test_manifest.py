"""The manifest validates itself and prices jobs per started megapixel."""

from __future__ import annotations

import pytest

from retouch.sdk import SDK_API_VERSION, CostModel, EnhanceKind, Manifest, Operation


def manifest(**overrides: object) -> Manifest:
    fields: dict[str, object] = {
        "name": "acme",
        "version": "1.0",
        "description": "test",
        "operations": frozenset({Operation.INPAINT}),
        "models": ("m1", "m2"),
        "max_pixels": 1_000_000,
        "supports_mask": True,
    }
    fields.update(overrides)
    return Manifest(**fields)  # type: ignore[arg-type]


def test_a_valid_manifest_defaults_to_its_first_model_and_this_sdk_version() -> None:
    m = manifest()
    assert m.default_model == "m1"
    assert m.sdk_api_version == SDK_API_VERSION
    assert m.can(Operation.INPAINT)
    assert not m.can(Operation.ENHANCE)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"name": ""}, "name ''"),
        ({"name": "has space"}, "name 'has space'"),
        ({"operations": frozenset()}, "operations must not be empty"),
        ({"models": ()}, "models must name at least one model"),
        ({"max_pixels": 0}, "max_pixels must be positive"),
        ({"supports_mask": False}, "must support masks"),
        ({"operations": frozenset({Operation.OUTPAINT})}, "must set supports_outpaint"),
        ({"upscale_factors": (1, 2)}, "upscale factors must be 2 or more"),
    ],
)
def test_an_invalid_manifest_names_the_provider_and_the_problem(
    overrides: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match="invalid manifest for provider") as raised:
        manifest(**overrides)
    assert problem in str(raised.value)


def test_every_manifest_problem_is_reported_at_once() -> None:
    with pytest.raises(ValueError, match="invalid manifest") as raised:
        manifest(models=(), max_pixels=-1)
    assert "models" in str(raised.value)
    assert "max_pixels" in str(raised.value)


@pytest.mark.parametrize(
    ("width", "height", "credits"),
    [(1, 1, 3 + 2), (1000, 1000, 3 + 2), (1000, 1001, 3 + 4), (4096, 4096, 3 + 2 * 17)],
)
def test_cost_is_a_flat_part_plus_each_started_megapixel(
    width: int, height: int, credits: int
) -> None:
    assert CostModel(credits_per_job=3, credits_per_megapixel=2).estimate(width, height) == credits


def test_free_by_default_and_never_negative() -> None:
    assert CostModel().estimate(512, 512) == 0
    with pytest.raises(ValueError, match="negative"):
        CostModel(credits_per_job=-1)


def test_enhance_kinds_say_which_enhancements_a_provider_offers() -> None:
    upscaler = manifest(
        operations=frozenset({Operation.ENHANCE}),
        upscale_factors=(2, 4),
        enhance_kinds=frozenset({EnhanceKind.UPSCALE}),
    )
    assert upscaler.can_enhance(EnhanceKind.UPSCALE)
    assert not upscaler.can_enhance(EnhanceKind.DENOISE)
    everything = manifest(operations=frozenset({Operation.ENHANCE}), upscale_factors=(2,))
    assert all(everything.can_enhance(kind) for kind in EnhanceKind)
    no_factors = manifest(operations=frozenset({Operation.ENHANCE}))
    assert not no_factors.can_enhance(EnhanceKind.UPSCALE)
    assert no_factors.can_enhance(EnhanceKind.SHARPEN)
    assert not manifest().can_enhance(EnhanceKind.SHARPEN)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"upscale_factors": (2,), "enhance_kinds": frozenset({EnhanceKind.DENOISE})}, "UPSCALE"),
        ({"enhance_kinds": frozenset({EnhanceKind.UPSCALE})}, "must offer"),
        ({"enhance_kinds": frozenset()}, "must offer"),
    ],
)
def test_enhance_kinds_must_agree_with_the_upscale_factors(
    overrides: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        manifest(operations=frozenset({Operation.ENHANCE}), **overrides)
