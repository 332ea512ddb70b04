"""retouch.sdk.testing: a conformance kit and a fake provider for tests.

Provider packages run :func:`check_provider` (or each of :data:`CHECKS`) over their
provider in their own test suites; code that drives providers, such as the server,
tests against :class:`FakeProvider`. Nothing here touches the network.
"""

from ._checks import CHECKS, CLOSE_TIMEOUT, RUN_TIMEOUT, Check, check_provider
from ._fake import FakeProvider
from ._images import sample_image, sample_mask

__all__ = [
    "CHECKS",
    "CLOSE_TIMEOUT",
    "RUN_TIMEOUT",
    "Check",
    "FakeProvider",
    "check_provider",
    "sample_image",
    "sample_mask",
]
