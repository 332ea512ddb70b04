"""The SDK's public names are deliberate: adding or removing one is a visible change."""

from __future__ import annotations

import retouch.sdk
import retouch.sdk.http
import retouch.sdk.testing


def test_sdk_exports() -> None:
    assert retouch.sdk.__all__ == [
        "ENTRY_POINT_GROUP",
        "SDK_API_VERSION",
        "SYSTEM_CLOCK",
        "Clock",
        "ConfigReader",
        "CostModel",
        "EditRequest",
        "EncodedImage",
        "EnhanceKind",
        "EnhanceRequest",
        "Event",
        "GenerationParams",
        "Health",
        "HealthReport",
        "InpaintRequest",
        "JobCancelled",
        "JobContext",
        "Manifest",
        "Mask",
        "Operation",
        "OutpaintRequest",
        "Padding",
        "Progress",
        "ProgressReporter",
        "Provider",
        "ProviderBadResponse",
        "ProviderError",
        "ProviderNotConfigured",
        "ProviderRateLimited",
        "ProviderRejected",
        "ProviderTimeout",
        "ProviderUnavailable",
        "RGBImage",
        "Redactor",
        "Result",
        "Secret",
        "SystemClock",
        "Upload",
        "Usage",
        "WorkerPool",
        "composite",
        "decode_image",
        "encode_png",
        "expected_size",
        "fit_to_request",
        "mask_bounds",
        "run_with_progress",
        "trace_headers",
        "upload_image",
    ]


def test_http_exports() -> None:
    assert retouch.sdk.http.__all__ == [
        "METADATA_ADDRESSES",
        "SERVER_KEYS",
        "AddressPolicy",
        "AddressRefused",
        "Classifier",
        "Done",
        "FilePart",
        "FormValue",
        "GuardedResolver",
        "HttpClient",
        "HttpConfig",
        "HttpRuntime",
        "Polled",
        "RemoteProvider",
        "Response",
        "RetryPolicy",
        "Sleep",
        "backoff_delay",
        "bearer",
        "media_type",
        "parse_retry_after",
        "pick",
    ]


def test_testing_kit_exports() -> None:
    assert retouch.sdk.testing.__all__ == [
        "CHECKS",
        "CLOSE_TIMEOUT",
        "RUN_TIMEOUT",
        "Check",
        "ContextFactory",
        "FakeHttpServer",
        "FakeProvider",
        "FormPart",
        "ManualClock",
        "RecordedRequest",
        "Reply",
        "Responder",
        "check_provider",
        "contexts_on",
        "sample_context",
        "sample_image",
        "sample_mask",
    ]


def test_every_export_resolves() -> None:
    for module in (retouch.sdk, retouch.sdk.http, retouch.sdk.testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is exported but missing"
