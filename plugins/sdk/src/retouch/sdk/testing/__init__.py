"""retouch.sdk.testing: a conformance kit and a fake provider for tests.

Provider packages run :func:`check_provider` (or each of :data:`CHECKS`) over their
provider in their own test suites; code that drives providers, such as the server,
tests against :class:`FakeProvider`. Hosted providers are tested against
:class:`FakeHttpServer`, a scriptable local fake of their API (loopback only).
"""

from ._checks import CHECKS, CLOSE_TIMEOUT, RUN_TIMEOUT, Check, check_provider
from ._clock import ManualClock
from ._contexts import ContextFactory, contexts_on, sample_context
from ._fake import FakeProvider
from ._fake_http import FakeHttpServer, FormPart, RecordedRequest, Reply, Responder
from ._images import sample_image, sample_mask

__all__ = [
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
