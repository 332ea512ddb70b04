"""A second instance of the ``rest`` plugin under its own name, so that one server runs
two hosted providers of the same kind against two fake vendors."""

from __future__ import annotations

import dataclasses

from retouch.providers.rest import MANIFEST, RestProvider


class SecondRest(RestProvider):
    """The rest provider, named ``rest-b``."""

    MANIFEST = dataclasses.replace(MANIFEST, name="rest-b")
