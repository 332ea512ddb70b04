"""retouch.providers.rest: any hosted image API of the common JSON REST shape.

Registered under the ``retouch.providers`` entry point group as ``rest``. The wire
format is not one vendor's: it is the shape many hosted image APIs share, defined
here so that any compatible vendor plugs in by configuration alone.

Wire format
-----------
Inpaint: ``POST {base_url}/images/inpaint``; outpaint: ``POST
{base_url}/images/outpaint``, once per side to extend (left, right, top, bottom, in
that order; each call extends the previous call's result). Headers:
``Authorization: Bearer <api key>``, ``Content-Type: application/json``,
``Idempotency-Key: <job id>`` (``<job id>-<side>`` for outpaint calls) and the job's
W3C ``traceparent``. Body::

    {"image": "<base64 PNG/JPEG/WEBP>", "mask": "<base64 PNG, white = replace>",
     "prompt": "a red door", "negative_prompt": "blur", "strength": 0.8,
     "guidance_scale": 7.5, "steps": 30, "seed": 1234, "model": "vendor-model",
     "direction": "left", "pixels": 256}

``mask`` is sent for inpaint only, ``direction``/``pixels`` for outpaint only;
``negative_prompt``, ``strength``, ``guidance_scale`` and ``steps`` only when the
caller set them. ``seed`` is the job's seed, or -1 (random) with ``send_seed =
false``. The input image is forwarded as the caller sent it, never re-encoded. The
answer is JSON: ``{"image": "<base64>"}`` (a ``data:`` URL is accepted too) or
``{"url": "https://..."}`` to download, optionally with ``"seed"`` and
``"credits"`` (the vendor's cost, which is charged as actual usage).

Configuration
-------------
::

    [providers.rest]
    base_url = "https://images.example.com/v1"   # required
    api_key_env = "EXAMPLE_IMAGES_API_KEY"       # the key stays in the environment
    model = "sdxl-inpainting"                    # sent as "model"
    inpaint_path = "/images/inpaint"
    outpaint_path = "/images/outpaint"
    max_outpaint_px = 2048                       # per side and call
    send_seed = true
    idempotency_header = "Idempotency-Key"
    download_hosts = ["cdn.example.com"]         # where "url" answers may point
    total_timeout_s = 120
    retry_attempts = 3

    [providers.rest.fields]          # the vendor's names for our request fields
    image = "init_image"
    guidance_scale = "cfg_scale"

    [providers.rest.answer_fields]   # dotted paths into the answer
    result = "data.0.b64"
    credits = "usage.credits"

Every key of :meth:`retouch.sdk.http.HttpConfig.from_config` is accepted too.
Cost: 1 credit per job plus 1 per started megapixel, plus the vendor's reported
``credits``; 8 more are reserved to cover them, and what is not used is refunded.
"""

from ._provider import MANIFEST, MAX_PIXELS, RestProvider
from ._settings import ANSWER_FIELDS, REQUEST_FIELDS, RestSettings

__all__ = [
    "ANSWER_FIELDS",
    "MANIFEST",
    "MAX_PIXELS",
    "REQUEST_FIELDS",
    "RestProvider",
    "RestSettings",
]
