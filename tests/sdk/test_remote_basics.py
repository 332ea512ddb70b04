"""The SDK's plain pieces for remote work: secrets, job contexts, usage and its price,
Retry-After, backoff, config reading and image fitting."""

from __future__ import annotations

import email.utils
import pickle

import numpy as np
import pytest

from retouch.sdk import (
    ConfigReader,
    CostModel,
    EncodedImage,
    InpaintRequest,
    JobContext,
    OutpaintRequest,
    Padding,
    ProviderBadResponse,
    Redactor,
    Secret,
    Usage,
    decode_image,
    encode_png,
    expected_size,
    fit_to_request,
)
from retouch.sdk.http import RetryPolicy, backoff_delay, parse_retry_after
from retouch.sdk.testing import ManualClock, sample_image, sample_mask

# --- secrets ---------------------------------------------------------------------------


def test_a_secret_shows_stars_everywhere_but_reveal() -> None:
    secret = Secret("sk-live-123456789")
    assert str(secret) == "***"
    assert repr(secret) == "Secret('***')"
    assert f"{secret}" == "***"
    assert f"key={secret!s} {secret:>20}" == "key=*** ***"
    assert "sk-live" not in repr({"api_key": secret})
    assert secret.reveal() == "sk-live-123456789"


def test_secrets_compare_by_value_and_refuse_pickling() -> None:
    assert Secret("abcdefgh") == Secret("abcdefgh")
    assert Secret("abcdefgh") != Secret("abcdefgi")
    with pytest.raises(TypeError):
        pickle.dumps(Secret("abcdefgh"))
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


def test_the_redactor_removes_values_and_the_bare_token_of_a_header() -> None:
    redact = Redactor([Secret("Bearer tok-0123456789")])
    assert redact("sent Bearer tok-0123456789") == "sent ***"
    assert redact("echoed tok-0123456789 back") == "echoed *** back"
    assert redact("Bearer is a word") == "Bearer is a word", "short words are not secrets"


# --- job context -----------------------------------------------------------------------


def test_time_left_runs_on_the_injected_clock() -> None:
    clock = ManualClock()
    context = JobContext("job_1", deadline=clock.monotonic() + 10, clock=clock)
    assert context.time_left() == 10
    clock.advance(4)
    assert context.time_left() == 6
    assert context.bound(30) == 6
    assert context.bound(2) == 2
    assert not context.expired
    clock.advance(7)
    assert context.time_left() == 0
    assert context.expired


def test_a_context_without_deadline_has_no_time_limit() -> None:
    context = JobContext("job_1")
    assert context.time_left() is None
    assert context.bound(30) == 30
    assert not context.expired
    with pytest.raises(ValueError, match="job id"):
        JobContext("")


def test_encoded_images_must_be_images_and_hide_their_bytes() -> None:
    image = EncodedImage(b"\x89PNG" + b"x" * 100, "image/png")
    assert "xxxx" not in repr(image)
    with pytest.raises(ValueError, match="not an image type"):
        EncodedImage(b"{}", "application/json")


# --- usage and cost ----------------------------------------------------------------------


def test_usage_adds_up_and_refuses_nonsense() -> None:
    total = Usage(images=1, provider_credits=2.5) + Usage(images=1, predict_seconds=3.0)
    assert total == Usage(images=2, provider_credits=2.5, predict_seconds=3.0)
    with pytest.raises(ValueError, match="non-negative"):
        Usage(usd=-1.0)
    with pytest.raises(ValueError, match="finite"):
        Usage(predict_seconds=float("nan"))


def test_the_estimate_reserves_the_metered_part_and_actual_charges_the_usage() -> None:
    cost = CostModel(
        credits_per_job=2,
        credits_per_megapixel=1,
        credits_per_predict_second=0.5,
        metered_reserve=10,
    )
    assert cost.metered
    assert cost.estimate(1024, 1024) == 2 + 2 + 10
    assert cost.actual_credits(Usage(predict_seconds=3.0), 1024, 1024) == 2 + 2 + 2
    assert cost.actual_credits(Usage(), 1024, 1024) == 4
    # 0.1 credit per second for 30 s is 3 credits, not 4 (float noise is not rounded up).
    tenth = CostModel(credits_per_predict_second=0.1)
    assert tenth.actual_credits(Usage(predict_seconds=30.0), 1, 1) == 3


def test_actual_credits_use_the_megapixels_the_upstream_billed() -> None:
    cost = CostModel(credits_per_megapixel=3)
    assert cost.actual_credits(Usage(megapixels=0.5), 4000, 4000) == 3
    assert cost.actual_credits(Usage(), 4000, 4000) == 3 * 16
    assert not cost.metered


def test_usd_and_provider_credits_convert_at_their_rates() -> None:
    cost = CostModel(credits_per_usd=100.0, credits_per_provider_credit=2.0)
    assert cost.actual_credits(Usage(usd=0.031, provider_credits=1.5), 10, 10) == 7


def test_negative_prices_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        CostModel(credits_per_usd=-1.0)


# --- Retry-After and backoff ----------------------------------------------------------------


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    assert parse_retry_after(email.utils.formatdate(now + 42, usegmt=True), now=now) == 42.0
    assert parse_retry_after(email.utils.formatdate(now - 42, usegmt=True), now=now) == 0.0
    assert parse_retry_after("-5", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("", now=now) is None
    assert parse_retry_after(None, now=now) is None
    assert parse_retry_after("inf", now=now) is None


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    assert backoff_delay(policy, 1, lambda: 1.0) == 0.5
    assert backoff_delay(policy, 2, lambda: 1.0) == 1.0
    assert backoff_delay(policy, 3, lambda: 1.0) == 2.0
    assert backoff_delay(policy, 4, lambda: 1.0) == 3.0
    assert backoff_delay(policy, 9, lambda: 0.25) == 0.75
    assert backoff_delay(policy, 3, lambda: 0.0) == 0.0


# --- config ------------------------------------------------------------------------------


def test_the_config_reader_names_the_provider_and_key() -> None:
    read = ConfigReader("acme", {"timeout_s": "soon", "n": True, "hosts": ["a", 3]})
    with pytest.raises(
        ValueError, match=r"provider 'acme': config key 'timeout_s' must be a number"
    ):
        read.number("timeout_s", 1.0)
    with pytest.raises(ValueError, match="must be a whole number"):
        read.integer("n", 1)
    with pytest.raises(ValueError, match="list of non-empty strings"):
        read.strings("hosts")
    with pytest.raises(ValueError, match="'model' is required"):
        read.string("model")


def test_the_config_reader_checks_ranges_choices_and_leftovers() -> None:
    read = ConfigReader("acme", {"steps": 500, "mode": "fast", "typo": 1})
    with pytest.raises(ValueError, match="at most 150"):
        read.integer("steps", 30, maximum=150)
    with pytest.raises(ValueError, match="one of slow, careful"):
        read.string("mode", choices=("slow", "careful"))
    with pytest.raises(ValueError, match=r"unknown config key.*typo"):
        read.finish()


def test_secrets_come_only_as_secret_objects() -> None:
    assert ConfigReader("acme", {"api_key": Secret("k" * 10)}).secret() == Secret("k" * 10)
    with pytest.raises(ValueError, match="api_key_env"):
        ConfigReader("acme", {}).secret()
    assert ConfigReader("acme", {}).secret(required=False) is None
    with pytest.raises(ValueError, match="never from the config file") as caught:
        ConfigReader("acme", {"api_key": "sk-plain-text"}).secret()
    assert "sk-plain-text" not in str(caught.value)


# --- images ------------------------------------------------------------------------------


def test_png_round_trips_and_bad_bytes_name_the_provider() -> None:
    image = sample_image()
    assert np.array_equal(decode_image(encode_png(image), provider="acme"), image)
    with pytest.raises(ProviderBadResponse, match="provider 'acme' sent the result image"):
        decode_image(b"<html>", provider="acme")


def test_fit_to_request_resizes_and_keeps_unmasked_pixels_exactly() -> None:
    image, mask = sample_image(), sample_mask()
    request = InpaintRequest(image, mask, "m", seed=1)
    answer = np.zeros((64, 64, 3), np.uint8)  # a model's own resolution, all changed
    out = fit_to_request(request, answer)
    assert out.shape == image.shape
    assert np.array_equal(out[mask == 0], image[mask == 0])
    assert (out[mask > 0] == 0).all()


@pytest.mark.parametrize("operation", ["inpaint", "outpaint"])
def test_fit_to_request_only_resizes_for_a_host_that_composites(operation: str) -> None:
    image = sample_image()
    request: InpaintRequest | OutpaintRequest = (
        InpaintRequest(image, sample_mask(), "m", seed=1)
        if operation == "inpaint"
        else OutpaintRequest(image, Padding(left=10, top=4), "m", seed=1)
    )
    width, height = expected_size(request)
    out = fit_to_request(request, np.full((64, 64, 3), 7, np.uint8), put_back=False)
    assert out.shape == (height, width, 3)
    assert (out == 7).all(), "nothing of the input put back"


def test_fit_to_request_puts_the_original_back_inside_an_outpaint() -> None:
    image = sample_image()
    request = OutpaintRequest(image, Padding(left=10, top=4), "m", seed=1)
    out = fit_to_request(request, np.full((50, 50, 3), 7, np.uint8))
    height, width = image.shape[:2]
    assert out.shape == (height + 4, width + 10, 3)
    assert np.array_equal(out[4:, 10:], image)
    assert (out[:4] == 7).all()
