"""The SDK's public names are deliberate: adding or removing one is a visible change."""

from __future__ import annotations

import retouch.sdk
import retouch.sdk.testing


def test_sdk_exports() -> None:
    assert retouch.sdk.__all__ == [
        "ENTRY_POINT_GROUP",
        "SDK_API_VERSION",
        "CostModel",
        "EditRequest",
        "EnhanceKind",
        "EnhanceRequest",
        "Event",
        "GenerationParams",
        "Health",
        "HealthReport",
        "InpaintRequest",
        "JobCancelled",
        "Manifest",
        "Mask",
        "Operation",
        "OutpaintRequest",
        "Padding",
        "Progress",
        "ProgressReporter",
        "Provider",
        "ProviderError",
        "ProviderRateLimited",
        "ProviderRejected",
        "ProviderTimeout",
        "ProviderUnavailable",
        "RGBImage",
        "Result",
        "WorkerPool",
        "composite",
        "mask_bounds",
        "run_with_progress",
        "trace_headers",
    ]


def test_testing_kit_exports() -> None:
    assert retouch.sdk.testing.__all__ == [
        "CHECKS",
        "CLOSE_TIMEOUT",
        "RUN_TIMEOUT",
        "Check",
        "FakeProvider",
        "check_provider",
        "sample_image",
        "sample_mask",
    ]


def test_every_export_resolves() -> None:
    for module in (retouch.sdk, retouch.sdk.testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is exported but missing"
