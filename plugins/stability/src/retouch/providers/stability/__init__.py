"""retouch.providers.stability: Stability AI's v2beta stable-image services as a
hosted provider.

Wire format, from the API reference at https://platform.stability.ai/docs/api-reference
(sections Edit: Inpaint, Erase, Outpaint; Upscale: Fast, Conservative, Creative;
Results) and prices from https://platform.stability.ai/pricing: each service is a
``POST https://api.stability.ai/v2beta/stable-image/...`` with a multipart/form-data
body, ``authorization: Bearer <key>`` and ``accept: image/*`` (the image bytes, with
``finish-reason`` and ``seed`` headers) or ``application/json`` (``image`` in base64,
``finish_reason``, ``seed``). Creative upscale answers ``{"id"}`` and its result is
polled at ``GET /v2beta/results/{id}``: 202 while it runs, 200 with the image.

Registered under the ``retouch.providers`` entry point group as ``stability``; paid
(``remote = True``), charged the Stability credits of the service each job called.
"""

from ._config import StabilityConfig
from ._endpoints import Service
from ._provider import MANIFEST, MAX_PIXELS, MODEL, StabilityProvider

__all__ = ["MANIFEST", "MAX_PIXELS", "MODEL", "Service", "StabilityConfig", "StabilityProvider"]
