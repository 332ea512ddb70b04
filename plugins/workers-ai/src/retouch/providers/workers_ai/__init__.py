"""retouch.providers.workers_ai: Stable Diffusion 1.5 inpainting on Cloudflare Workers AI.

Speaks the Workers AI REST API
(``POST https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/run/{model}``
with a bearer token) for the model documented at
https://developers.cloudflare.com/workers-ai/models/stable-diffusion-v1-5-inpainting/
(its input schema: ``prompt`` required, ``image`` and ``mask`` as arrays of byte values,
``num_steps`` at most 20, ``strength``, ``guidance``, ``seed``, ``negative_prompt``,
``width``/``height`` 256..2048; PNG bytes back), with the error codes of
https://developers.cloudflare.com/workers-ai/platform/errors/. Registered under the
``retouch.providers`` entry point group as ``workers-ai``.
"""

from ._config import DEFAULT_PROMPT, MODEL_ID, WorkersAIConfig
from ._provider import MANIFEST, MAX_PIXELS, MODEL, WorkersAIProvider

__all__ = [
    "DEFAULT_PROMPT",
    "MANIFEST",
    "MAX_PIXELS",
    "MODEL",
    "MODEL_ID",
    "WorkersAIConfig",
    "WorkersAIProvider",
]
