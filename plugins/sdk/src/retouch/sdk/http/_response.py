"""An HTTP answer read in full (under the size cap), with checked accessors that turn
a malformed answer into :class:`~retouch.sdk.ProviderBadResponse`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast, overload

from multidict import CIMultiDictProxy
from yarl import URL

from .._errors import ProviderBadResponse

T = TypeVar("T")

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP answer: status, headers and the whole body.

    ``what`` describes the call in error messages (``"POST /v1/predictions"``), and
    ``provider`` names whose answer it is.
    """

    provider: str
    what: str
    status: int
    headers: CIMultiDictProxy[str] = field(repr=False)
    body: bytes = field(repr=False)
    url: URL = field(repr=False)

    @property
    def content_type(self) -> str:
        """The media type, lower-case, without parameters (``""`` when absent)."""
        return media_type(self.headers.get("Content-Type", ""))

    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON, or :class:`ProviderBadResponse` saying why not."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.malformed(f"malformed JSON ({exc})") from None

    def json_object(self) -> dict[str, Any]:
        """The body parsed as a JSON object."""
        document = self.json()
        if not isinstance(document, dict):
            raise self.malformed(f"a JSON {type(document).__name__}, not an object")
        return document

    @overload
    def pick(self, path: str, kind: type[T]) -> T: ...

    @overload
    def pick(self, path: str, kind: type[T], default: T) -> T: ...

    def pick(self, path: str, kind: type[T], default: object = _MISSING) -> T:
        """The field at dotted ``path`` of the JSON body (``"data.0.b64_json"``: list
        items by index), checked to be a ``kind``. Missing or mistyped fields raise
        :class:`ProviderBadResponse` naming the field, unless a ``default`` is given
        for a missing one."""
        return pick(self.json(), path, kind, default, where=self)

    def malformed(self, problem: str) -> ProviderBadResponse:
        """The error for an answer that is not what the API documents."""
        return ProviderBadResponse(f"the {self.provider} API answered {self.what} with {problem}")


def pick(
    document: object, path: str, kind: type[T], default: object = _MISSING, *, where: Response
) -> T:
    """The field at dotted ``path`` of a parsed JSON ``document``; see
    :meth:`Response.pick`. ``where`` is the answer it came from, for messages."""
    value: object = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            if default is not _MISSING:
                return cast(T, default)
            raise where.malformed(f"no {path!r} field")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return cast(T, float(value))
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise where.malformed(
            f"a {type(value).__name__} in field {path!r} where a {kind.__name__} belongs"
        )
    return value


def media_type(content_type: str) -> str:
    """``"application/json"`` from ``"Application/JSON; charset=utf-8"``."""
    return content_type.split(";", 1)[0].strip().lower()


def type_matches(actual: str, expected: str | Sequence[str]) -> bool:
    """Whether media type ``actual`` is one of ``expected``: exact types
    (``application/json``, which also accepts ``application/*+json``) or prefixes
    ending in ``/`` (``image/``)."""
    for wanted in (expected,) if isinstance(expected, str) else expected:
        if wanted.endswith("/"):
            if actual.startswith(wanted):
                return True
        elif actual == wanted or (
            wanted == "application/json"
            and actual.startswith("application/")
            and actual.endswith("+json")
        ):
            return True
    return False
