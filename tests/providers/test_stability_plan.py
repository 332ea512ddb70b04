"""Stability: which service each request maps to, and the documented limits, checked
before anything is sent."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from retouch.providers.stability import Service, StabilityConfig
from retouch.providers.stability._forms import plan
from retouch.sdk import (
    ConfigReader,
    EnhanceKind,
    EnhanceRequest,
    GenerationParams,
    InpaintRequest,
    OutpaintRequest,
    Padding,
    ProviderRejected,
)
from retouch.sdk.testing import sample_image, sample_mask

MODEL = "stable-image"


def shaped(height: int, width: int) -> NDArray[np.uint8]:
    """An image of that shape without the memory: planning reads only the shape."""
    return np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (height, width, 3))


def test_an_inpaint_with_a_prompt_goes_to_inpaint_with_every_field() -> None:
    params = GenerationParams(prompt="a red door", negative_prompt="blur")
    call = plan(InpaintRequest(sample_image(), sample_mask(), MODEL, 42, params), StabilityConfig())
    assert call.service is Service.INPAINT
    assert call.fields == {
        "prompt": "a red door",
        "negative_prompt": "blur",
        "grow_mask": "5",
        "seed": "42",
        "output_format": "png",
    }
    assert call.files == ("image", "mask")
    assert call.output_size == (128, 96)


def test_an_inpaint_without_a_prompt_erases_unless_configured_to_inpaint() -> None:
    request = InpaintRequest(sample_image(), sample_mask(), MODEL, 7)
    erase = plan(request, StabilityConfig())
    assert erase.service is Service.ERASE
    assert "prompt" not in erase.fields
    config = StabilityConfig(unprompted_inpaint="inpaint", default_prompt="the background")
    inpaint = plan(request, config)
    assert inpaint.service is Service.INPAINT
    assert inpaint.fields["prompt"] == "the background"


def test_outpaint_sends_only_the_sides_that_grow_in_stabilitys_names() -> None:
    request = OutpaintRequest(sample_image(), Padding(left=16, bottom=24), MODEL, 1)
    call = plan(request, StabilityConfig())
    assert call.service is Service.OUTPAINT
    assert {k: call.fields[k] for k in ("left", "down")} == {"left": "16", "down": "24"}
    assert not {"right", "up"} & call.fields.keys()
    assert call.output_size == (144, 120)


def test_outpaint_past_2000_pixels_a_side_is_refused_naming_padding() -> None:
    request = OutpaintRequest(sample_image(), Padding(top=2001), MODEL, 1)
    with pytest.raises(ProviderRejected, match="2000") as caught:
        plan(request, StabilityConfig())
    assert caught.value.field == "padding"


@pytest.mark.parametrize(
    ("height", "width", "words"),
    [(63, 128, "at least 64"), (4000, 3000, "9,437,184"), (100, 300, "aspect ratio")],
)
def test_outpaint_inputs_outside_the_documented_limits_are_refused(
    height: int, width: int, words: str
) -> None:
    request = OutpaintRequest(shaped(height, width), Padding(left=8), MODEL, 1)
    with pytest.raises(ProviderRejected, match=words) as caught:
        plan(request, StabilityConfig())
    assert caught.value.field == "image"


def test_upscale_maps_each_factor_to_its_configured_service() -> None:
    x4 = plan(
        EnhanceRequest(sample_image(), EnhanceKind.UPSCALE, MODEL, 3, scale=4), StabilityConfig()
    )
    assert x4.service is Service.UPSCALE_FAST
    assert x4.fields == {"output_format": "png"}
    assert x4.output_size == (512, 384)
    x2 = plan(
        EnhanceRequest(sample_image(), EnhanceKind.UPSCALE, MODEL, 3, scale=2), StabilityConfig()
    )
    assert x2.service is Service.UPSCALE_CONSERVATIVE
    assert x2.fields["prompt"]
    assert x2.fields["seed"] == "3"
    creative = StabilityConfig(upscale_x2="creative")
    request = EnhanceRequest(sample_image(), EnhanceKind.UPSCALE, MODEL, 3, scale=2)
    assert plan(request, creative).service is Service.UPSCALE_CREATIVE
    fast_x2 = plan(request, StabilityConfig(upscale_x2="fast"))
    assert fast_x2.output_size == (256, 192)
    assert fast_x2.notes == {"resized_from": "x4"}


def test_fast_upscale_refuses_sides_over_1536_pixels() -> None:
    request = EnhanceRequest(shaped(600, 1600), EnhanceKind.UPSCALE, MODEL, 3, scale=4)
    with pytest.raises(ProviderRejected, match="1536") as caught:
        plan(request, StabilityConfig())
    assert caught.value.field == "image"


def test_an_upscale_larger_than_the_service_answers_is_refused_naming_scale() -> None:
    # Conservative answers about 4 megapixels; doubling 1500 x 1500 needs 9.
    request = EnhanceRequest(shaped(1500, 1500), EnhanceKind.UPSCALE, MODEL, 3, scale=2)
    with pytest.raises(ProviderRejected, match="pixels") as caught:
        plan(request, StabilityConfig())
    assert caught.value.field == "scale"


@pytest.mark.parametrize("kind", [EnhanceKind.DENOISE, EnhanceKind.SHARPEN])
def test_denoise_and_sharpen_are_refused_naming_kind(kind: EnhanceKind) -> None:
    with pytest.raises(ProviderRejected) as caught:
        plan(EnhanceRequest(sample_image(), kind, MODEL, 3), StabilityConfig())
    assert caught.value.field == "kind"


def test_a_seed_beyond_stabilitys_range_wraps_into_it() -> None:
    request = InpaintRequest(sample_image(), sample_mask(), MODEL, 2**32 - 1)
    assert plan(request, StabilityConfig()).fields["seed"] == "0"


def test_a_prompt_over_10000_characters_is_refused_naming_prompt() -> None:
    params = GenerationParams(prompt="x" * 10_001)
    with pytest.raises(ProviderRejected) as caught:
        plan(InpaintRequest(sample_image(), sample_mask(), MODEL, 1, params), StabilityConfig())
    assert caught.value.field == "prompt"


def test_config_reads_every_key_and_refuses_mistakes() -> None:
    read = ConfigReader("stability", {"upscale_x2": "fast", "grow_mask": 0, "answer": "json"})
    config = StabilityConfig.read(read)
    read.finish()
    assert (config.upscale_x2, config.grow_mask, config.answer) == ("fast", 0, "json")
    for bad in ({"upscale_x4": "huge"}, {"grow_mask": 21}, {"answer": "xml"}):
        with pytest.raises(ValueError, match="stability"):
            StabilityConfig.read(ConfigReader("stability", bad))
    with pytest.raises(ValueError, match="default_prompt"):
        StabilityConfig.read(ConfigReader("stability", {"unprompted_inpaint": "inpaint"}))
