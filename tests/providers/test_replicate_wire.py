"""The Replicate provider's wire format, without a network: the prediction objects it
reads, the inputs it builds, and the config that shapes both."""

from __future__ import annotations

import base64
import io
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from retouch.providers.replicate import DEFAULT_MODELS, ModelSpec, ReplicateConfig
from retouch.providers.replicate._inputs import prediction_input
from retouch.providers.replicate._predictions import Status, parse_prediction
from retouch.sdk import (
    ConfigReader,
    EncodedImage,
    GenerationParams,
    InpaintRequest,
    ProviderBadResponse,
    ProviderRejected,
    Secret,
)
from retouch.sdk.testing import sample_context, sample_image, sample_mask

README = Path(__file__).resolve().parents[2] / "plugins" / "replicate" / "README.md"
SD = DEFAULT_MODELS[0]
LAMA = ModelSpec(
    name="lama",
    model="twn39/lama",
    version="a" * 64,
    fields={"image": "image", "mask": "mask"},
)


def read(config: dict[str, object]) -> ReplicateConfig:
    reader = ConfigReader("replicate", {"api_key": Secret("r8_test-token"), **config})
    settings = ReplicateConfig.read(reader)
    reader.finish()
    return settings


def decode_data_url(value: object) -> NDArray[np.uint8]:
    assert isinstance(value, str)
    header, _, payload = value.partition(",")
    assert header == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
        return np.asarray(image)


def request(
    prompt: str = "",
    negative_prompt: str = "",
    steps: int | None = None,
    guidance_scale: float | None = None,
    strength: float | None = None,
) -> InpaintRequest:
    params = GenerationParams(prompt, negative_prompt, strength, guidance_scale, steps)
    return InpaintRequest(sample_image(), sample_mask(), "sd-inpaint", 77, params)


# --- predictions --------------------------------------------------------------------


def test_a_running_prediction_reports_the_last_percentage_of_its_logs() -> None:
    prediction = parse_prediction(
        {
            "id": "gm3qorzdhgbfurvjtvhg6dckhu",
            "status": "processing",
            "logs": "Using seed: 77\n  3%|▎         | 1/30\n 45%|████▌     | 13/30 [00:02<00:02]",
            "output": None,
        }
    )
    assert prediction.status is Status.PROCESSING
    assert not prediction.status.finished
    assert prediction.percent == 45
    assert prediction.output_url is None


def test_a_succeeded_prediction_gives_its_first_output_url_and_predict_time() -> None:
    prediction = parse_prediction(
        {
            "id": "abc123",
            "status": "succeeded",
            "output": ["https://replicate.delivery/pbxt/x/out-0.png", "https://other"],
            "metrics": {"predict_time": 4.25},
        }
    )
    assert prediction.output_url == "https://replicate.delivery/pbxt/x/out-0.png"
    assert prediction.predict_time == 4.25
    assert parse_prediction(
        {"id": "abc", "status": "succeeded", "output": "https://replicate.delivery/o.png"}
    ).output_url == ("https://replicate.delivery/o.png")


def test_the_nsfw_checker_failure_is_recognised_as_content_filtering() -> None:
    prediction = parse_prediction(
        {
            "id": "abc",
            "status": "failed",
            "error": "NSFW content detected. Try running it again, or try a different prompt.",
        }
    )
    assert prediction.content_filtered
    assert not parse_prediction(
        {"id": "abc", "status": "failed", "error": "CUDA OOM"}
    ).content_filtered


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "JSON list"),
        ({"status": "starting"}, "usable id"),
        ({"id": "../../admin", "status": "starting"}, "usable id"),
        ({"id": "abc", "status": "exploded"}, "status 'exploded'"),
        ({"id": "abc", "status": "succeeded", "output": None}, "without an image URL"),
        ({"id": "abc", "status": "succeeded", "output": ["file:///etc/passwd"]}, "image URL"),
    ],
)
def test_a_malformed_prediction_is_a_bad_response_naming_what_is_wrong(
    body: object, words: str
) -> None:
    with pytest.raises(ProviderBadResponse, match="replicate") as caught:
        parse_prediction(body)
    assert words in caught.value.message


# --- inputs -------------------------------------------------------------------------


def test_inputs_carry_the_original_bytes_and_the_white_replaces_mask() -> None:
    job = request(prompt="a brick wall", steps=30, guidance_scale=8.0)
    context = sample_context(job)
    values = prediction_input(SD, job, context)
    assert context.image is not None
    assert values["image"] == (
        "data:image/png;base64," + base64.b64encode(context.image.data).decode()
    )
    np.testing.assert_array_equal(decode_data_url(values["mask"]), job.mask)
    assert values["prompt"] == "a brick wall"
    assert values["num_inference_steps"] == 30
    assert values["guidance_scale"] == 8.0
    assert values["seed"] == 77
    assert values["num_outputs"] == 1
    assert "negative_prompt" not in values


def test_inputs_prefer_the_stores_short_lived_urls() -> None:
    job = request()
    context = sample_context(
        job, image_url="https://store.example/in.png?sig=1", mask_url="https://store.example/m"
    )
    values = prediction_input(SD, job, context)
    assert values["image"] == "https://store.example/in.png?sig=1"
    assert values["mask"] == "https://store.example/m"


def test_a_model_that_repaints_black_gets_the_mask_inverted() -> None:
    spec = ModelSpec(name="inverse", model="owner/inverse", mask_replaces_white=False)
    job = request()
    values = prediction_input(spec, job, sample_context(job, mask_url="https://store/m"))
    np.testing.assert_array_equal(decode_data_url(values["mask"]), 255 - job.mask)


def test_without_an_encoded_input_the_pixels_are_encoded_as_png() -> None:
    job = request()
    context = sample_context(job)
    bare = type(context)(job_id=context.job_id)
    values = prediction_input(SD, job, bare)
    np.testing.assert_array_equal(decode_data_url(values["image"]), job.image)
    np.testing.assert_array_equal(decode_data_url(values["mask"]), job.mask)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"prompt": "a cat"}, "prompt"),
        ({"negative_prompt": "blur"}, "negative_prompt"),
        ({"steps": 10}, "steps"),
        ({"guidance_scale": 3.0}, "guidance_scale"),
        ({"strength": 0.5}, "strength"),
    ],
)
def test_a_knob_the_model_lacks_is_refused_naming_it(params: dict[str, Any], field: str) -> None:
    job = request(**params)
    with pytest.raises(ProviderRejected) as caught:
        prediction_input(LAMA, job, sample_context(job))
    assert caught.value.field == field


def test_lama_sends_only_the_image_and_the_mask() -> None:
    job = request()
    assert set(prediction_input(LAMA, job, sample_context(job))) == {"image", "mask"}


def test_too_many_steps_are_refused() -> None:
    job = request(steps=501)
    with pytest.raises(ProviderRejected, match="at most 500 steps") as caught:
        prediction_input(SD, job, sample_context(job))
    assert caught.value.field == "steps"


def test_encoded_images_keep_their_content_type_in_the_data_url() -> None:
    from retouch.providers.replicate._inputs import data_url

    assert data_url(EncodedImage(b"\xff\xd8\xff", "image/jpeg")) == "data:image/jpeg;base64,/9j/"


# --- config -------------------------------------------------------------------------


def test_the_default_config_runs_stable_diffusion_inpainting() -> None:
    settings = read({})
    assert [spec.name for spec in settings.models] == ["sd-inpaint"]
    assert settings.models[0].model == "stability-ai/stable-diffusion-inpainting"
    assert settings.wait_s == 10
    assert settings.cost.credits_per_predict_second == 1.0


def test_models_come_from_the_config_in_order() -> None:
    settings = read(
        {
            "models": {
                "lama": {
                    "model": "twn39/lama",
                    "version": "b" * 64,
                    "fields": {"prompt": "", "steps": "", "seed": ""},
                },
                "sd-inpaint": {"model": "stability-ai/stable-diffusion-inpainting"},
            }
        }
    )
    assert [spec.name for spec in settings.models] == ["lama", "sd-inpaint"]
    lama = settings.models[0]
    assert lama.field_for("prompt") == ""
    assert lama.field_for("image") == "image"
    assert settings.models[1].version is None


def test_the_readme_example_configures_real_pinned_models() -> None:
    (example,) = re.findall(r"^```toml\n(.*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)
    table = dict(tomllib.loads(example)["providers"]["replicate"])
    # The server turns api_key_env into the secret; the plugin sees only the secret.
    assert table.pop("api_key_env") == "REPLICATE_API_TOKEN"
    settings = read(table)
    assert [spec.name for spec in settings.models] == ["sd-inpaint", "lama"]
    sd, lama = settings.models
    assert (sd.model, sd.version) == (SD.model, SD.version)
    assert lama.model == "twn39/lama"
    assert lama.version is not None, "a community model runs only at a pinned version"
    assert lama.field_for("prompt") == ""
    assert lama.mask_replaces_white


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"wait_s": 61}, "wait_s"),
        ({"models": {"x": {"model": "no-slash"}}}, "owner/name"),
        ({"models": {"x": {"model": "a/b", "version": "v1"}}}, "64-character"),
        ({"models": {"x": {"model": "a/b", "fields": {"colour": "c"}}}}, "not a knob"),
        ({"models": {"x": {"model": "a/b", "fields": {"mask": ""}}}}, "must be named"),
        ({"models": {"x": {"model": "a/b", "mask": "grey"}}}, "mask"),
        ({"models": {"x": {"model": "a/b", "typo": 1}}}, "typo"),
        ({"models": {}}, "at least one model"),
    ],
)
def test_a_bad_config_is_refused_naming_the_key(config: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        read(config)


def test_the_api_key_must_come_from_the_environment() -> None:
    with pytest.raises(ValueError, match="environment variable"):
        ReplicateConfig.read(ConfigReader("replicate", {"api_key": "r8_in-the-file"}))
    with pytest.raises(ValueError, match="api_key_env"):
        ReplicateConfig.read(ConfigReader("replicate", {}))
