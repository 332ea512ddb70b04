"""retouch.providers.openai: OpenAI's image edits (gpt-image-1) as a hosted provider.

Wire format: ``POST https://api.openai.com/v1/images/edits``, multipart/form-data, as
documented at https://platform.openai.com/docs/api-reference/images/createEdit (and the
image guide, https://platform.openai.com/docs/guides/image-generation): ``image`` (PNG,
WEBP or JPEG under 25 MB), ``mask`` (a PNG of the same size whose fully transparent
pixels mark what to edit), ``prompt`` (required, up to 32,000 characters), ``model``,
``n``, ``size`` (1024x1024, 1536x1024, 1024x1536 or auto), ``quality`` and
``output_format``; the answer is JSON with ``data[0].b64_json`` and the ``usage`` in
tokens, priced at https://platform.openai.com/docs/pricing.

The model treats the mask as guidance and answers at its own sizes, so the answer is
resized to the request's size and composited: pixels outside the mask come back
bit-identical. Registered under the ``retouch.providers`` entry point group as
``openai``; paid (``remote = True``).
"""

from ._config import OpenAIConfig
from ._provider import MANIFEST, MAX_PIXELS, MODEL, OpenAIProvider

__all__ = ["MANIFEST", "MAX_PIXELS", "MODEL", "OpenAIConfig", "OpenAIProvider"]
