"""retouch.providers.opencv: retouch's built-in provider, classical algorithms on the CPU.

Registered under the ``retouch.providers`` entry point group as ``opencv``, exactly
like a third-party provider.
"""

from ._config import OpenCVConfig
from ._provider import MANIFEST, MAX_PIXELS, MAX_UPSCALE_PIXELS, OpenCVProvider

__all__ = ["MANIFEST", "MAX_PIXELS", "MAX_UPSCALE_PIXELS", "OpenCVConfig", "OpenCVProvider"]
