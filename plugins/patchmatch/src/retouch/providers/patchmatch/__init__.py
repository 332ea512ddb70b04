"""retouch.providers.patchmatch: exemplar-based inpainting on the CPU.

A multi-scale PatchMatch in NumPy fills holes with patches copied from around them,
keeping texture sharp. Registered under the
``retouch.providers`` entry point group as ``patchmatch``, like any third-party
provider.
"""

from ._config import PatchMatchConfig
from ._provider import MANIFEST, MAX_PIXELS, PatchMatchProvider

__all__ = ["MANIFEST", "MAX_PIXELS", "PatchMatchConfig", "PatchMatchProvider"]
