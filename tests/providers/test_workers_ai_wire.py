"""The Workers AI provider's wire format, without a network: the JSON body with its
byte arrays, the schema's limits, the error envelope and the config."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from retouch.providers.workers_ai import DEFAULT_PROMPT, MODEL_ID, WorkersAIConfig
from retouch.providers.workers_ai._wire import (
    ApiError,
    byte_array,
    model_side,
    parse_errors,
    request_body,
)
from retouch.sdk import (
    ConfigReader,
    EncodedImage,
    GenerationParams,
    InpaintRequest,
    ProviderRejected,
    Secret,
)
from retouch.sdk.testing import sample_context, sample_image, sample_mask

ACCOUNT = "0123456789abcdef0123456789abcdef"


def job(params: GenerationParams | None = None) -> InpaintRequest:
    return InpaintRequest(
        sample_image(),
        sample_mask(),
        "stable-diffusion-v1-5-inpainting",
        9,
        params or GenerationParams(),
    )


def body_of(request: InpaintRequest, prompt: str = DEFAULT_PROMPT) -> dict[str, object]:
    decoded = json.loads(request_body(request, sample_context(request), prompt))
    assert isinstance(decoded, dict)
    return decoded


def test_byte_arrays_spell_every_byte_value() -> None:
    data = bytes(range(256)) + b"\x00\xff"
    assert json.loads(b"[" + byte_array(data) + b"]") == list(data)
    assert byte_array(b"") == b""


def test_the_body_carries_the_original_image_and_a_white_replaces_mask() -> None:
    request = job(
        GenerationParams(
            prompt="ivy", negative_prompt="text", steps=12, strength=0.7, guidance_scale=6.5
        )
    )
    context = sample_context(request)
    body = json.loads(request_body(request, context, DEFAULT_PROMPT))
    assert context.image is not None
    assert bytes(body["image"]) == context.image.data
    with Image.open(io.BytesIO(bytes(body["mask"]))) as mask:
        assert mask.mode == "L"
        np.testing.assert_array_equal(np.asarray(mask), request.mask)
    assert body["prompt"] == "ivy"
    assert body["negative_prompt"] == "text"
    assert body["num_steps"] == 12
    assert body["strength"] == 0.7
    assert body["guidance"] == 6.5
    assert body["seed"] == 9


def test_without_a_prompt_the_default_one_is_sent_and_knobs_are_left_out() -> None:
    body = body_of(job())
    assert body["prompt"] == DEFAULT_PROMPT
    assert not {"num_steps", "strength", "guidance", "negative_prompt"} & set(body)


def test_the_size_asked_for_is_the_inputs_on_the_schemas_grid() -> None:
    body = body_of(job())  # 128 x 96: below the schema's 256 minimum
    assert (body["width"], body["height"]) == (256, 256)
    assert [model_side(n) for n in (256, 1000, 1023, 1027, 4096)] == [256, 1000, 1024, 1024, 2048]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (GenerationParams(steps=21), "steps"),
        (GenerationParams(steps=0), "steps"),
        (GenerationParams(strength=1.5), "strength"),
    ],
)
def test_values_outside_the_schema_are_refused_naming_the_field(
    params: GenerationParams, field: str
) -> None:
    request = job(params)
    with pytest.raises(ProviderRejected) as caught:
        request_body(request, sample_context(request), DEFAULT_PROMPT)
    assert caught.value.field == field


def test_the_error_envelope_is_read_leniently() -> None:
    assert parse_errors(
        {"success": False, "errors": [{"code": 3040, "message": "No more data centers"}, "junk"]}
    ) == [ApiError(3040, "No more data centers")]
    assert parse_errors({"errors": [{"code": "x"}]}) == [ApiError(None, "")]
    assert parse_errors("nope") == []


def read(config: dict[str, object]) -> WorkersAIConfig:
    reader = ConfigReader("workers-ai", {"api_key": Secret("cf-token"), **config})
    settings = WorkersAIConfig.read(reader)
    reader.finish()
    return settings


def test_the_config_names_the_account_and_defaults_to_the_inpainting_model() -> None:
    settings = read({"account_id": ACCOUNT})
    assert settings.run_path == f"accounts/{ACCOUNT}/ai/run/{MODEL_ID}"
    assert settings.default_prompt == DEFAULT_PROMPT


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({}, "account_id"),
        ({"account_id": "not-hex"}, "32-character"),
        ({"account_id": ACCOUNT, "model_id": "stable-diffusion"}, "model_id"),
        ({"account_id": ACCOUNT, "default_prompt": ""}, "default_prompt"),
        ({"account_id": ACCOUNT, "colour": "red"}, "colour"),
    ],
)
def test_a_bad_config_is_refused_naming_the_key(config: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        read(config)


def test_a_webp_original_is_re_encoded_as_png() -> None:
    request = job()
    context = replace(
        sample_context(request), image=EncodedImage(b"RIFF....WEBPVP8 ", "image/webp")
    )
    body = json.loads(request_body(request, context, DEFAULT_PROMPT))
    with Image.open(io.BytesIO(bytes(body["image"]))) as image:
        assert image.format == "PNG"
        np.testing.assert_array_equal(np.asarray(image), request.image)
