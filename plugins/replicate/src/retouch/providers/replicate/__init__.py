"""retouch.providers.replicate: hosted inpainting models on Replicate.

Speaks Replicate's HTTP predictions API as documented at
https://replicate.com/docs/reference/http (create with ``POST /v1/predictions`` or
``POST /v1/models/{owner}/{name}/predictions``, sync mode with ``Prefer: wait``, a
deadline with ``Cancel-After``, ``GET /v1/predictions/{id}`` to poll and
``POST /v1/predictions/{id}/cancel``), with the prediction lifecycle of
https://replicate.com/docs/topics/predictions/lifecycle, sync mode of
https://replicate.com/docs/topics/predictions/create-a-prediction and deadlines of
https://replicate.com/changelog/2025-10-16-prediction-deadlines. Registered under
the ``retouch.providers`` entry point group as ``replicate``.
"""

from ._config import DEFAULT_MODELS, ModelSpec, ReplicateConfig
from ._provider import MAX_PIXELS, ReplicateProvider, build_manifest

__all__ = [
    "DEFAULT_MODELS",
    "MAX_PIXELS",
    "ModelSpec",
    "ReplicateConfig",
    "ReplicateProvider",
    "build_manifest",
]
