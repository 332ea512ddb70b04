"""The client's public names are deliberate: adding or removing one is a visible change."""

from __future__ import annotations

import retouch.client


def test_client_exports() -> None:
    assert retouch.client.__all__ == [
        "DEFAULT_TARGET",
        "TLS",
        "Accepted",
        "AsyncClient",
        "Bucket",
        "Cancelled",
        "Client",
        "Completed",
        "CostModel",
        "DeadlineExceeded",
        "EditJob",
        "Event",
        "ExcludedProvider",
        "FieldViolation",
        "Format",
        "ImageInfo",
        "ImageRef",
        "ImageSource",
        "InvalidArgument",
        "Job",
        "JobInfo",
        "JobState",
        "NotFound",
        "OnProgress",
        "Operation",
        "PermissionDenied",
        "Preference",
        "Progress",
        "ProviderHealth",
        "ProviderInfo",
        "QuotaViolation",
        "Quote",
        "Refusal",
        "ResourceExhausted",
        "Result",
        "ResultInfo",
        "RetouchError",
        "RetryPolicy",
        "Routing",
        "ServerError",
        "Sleep",
        "SyncEditJob",
        "SyncJob",
        "SyncResult",
        "Unauthenticated",
        "Unavailable",
        "Upload",
        "Usage",
        "from_rpc_error",
    ]


def test_exports_are_sorted_and_resolve() -> None:
    names = retouch.client.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in names:
        assert hasattr(retouch.client, name), f"retouch.client.{name} is exported but missing"


def test_retouch_stays_a_namespace_package() -> None:
    assert not hasattr(retouch, "__file__") or retouch.__file__ is None
