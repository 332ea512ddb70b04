"""Checks every request message gets before its handler runs: ids and names within
their length, enums within their values.

They run at the RPC edge, over the message's descriptor, so a new RPC or field is
covered without anyone remembering to call them. Over-long ids must be refused before
anything echoes them (a 6,000-character job id once pushed a NOT_FOUND past the
trailer limit), and proto3 enums are open: a client built from a newer contract can
send a number this server has no name for, which must be refused, not read as the
default.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .auth import MAX_SUBJECT_CHARS
from .errors import FieldViolation, InvalidArgument, echo

MAX_ID_CHARS = 128
"""Longest id a caller may send: request ids (chosen by callers) and the ids the server
issues (about 45 characters) alike."""
MAX_NAME_CHARS = 128
"""Longest provider, model or plan name."""

LENGTH_LIMITS: dict[str, int] = {
    "request_id": MAX_ID_CHARS,
    "job_id": MAX_ID_CHARS,
    "result_id": MAX_ID_CHARS,
    "upload_id": MAX_ID_CHARS,
    "page_token": MAX_ID_CHARS,
    "subject": MAX_SUBJECT_CHARS,
    "plan": MAX_NAME_CHARS,
    "provider": MAX_NAME_CHARS,
    "model": MAX_NAME_CHARS,
}
"""String fields, by name wherever they appear in a request, and their longest value."""

MAX_MEDIA_TYPE_CHARS = 127
"""Longest media type a caller may declare (RFC 6838 bounds each half to 127)."""
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
_MEDIA_TYPE = re.compile(rf"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")


def check_request(request: object) -> None:
    """Raise :class:`InvalidArgument` naming every over-long id or name and every
    unknown enum value in ``request`` (a protobuf message; anything else passes)."""
    if not isinstance(request, Message):
        return
    violations = request_violations(request)
    if violations:
        raise InvalidArgument.of(violations)


def check_media_type(value: str, field: str) -> None:
    """Refuse ``value`` unless it is a bare ``type/subtype`` of RFC 6838 name characters,
    at most :data:`MAX_MEDIA_TYPE_CHARS` long. A caller's media type is stored and may
    be sent on as a header (an S3 object's Content-Type), so a control character, a
    parameter or a megabyte of text must never get that far."""
    if len(value) > MAX_MEDIA_TYPE_CHARS:
        raise InvalidArgument(
            field,
            f"{field} is {len(value):,} characters long; at most "
            f"{MAX_MEDIA_TYPE_CHARS} are allowed",
        )
    if not _MEDIA_TYPE.fullmatch(value):
        raise InvalidArgument(
            field,
            f"{field} {echo(value)} is not a media type: use type/subtype, for example "
            "'image/png', with letters, digits and ! # $ & ^ _ . + - only",
        )


def request_violations(request: Message) -> list[FieldViolation]:
    """What :func:`check_request` would refuse, for callers that report it together
    with their own checks."""
    return list(_violations(request, ""))


def _violations(message: Message, prefix: str) -> Iterator[FieldViolation]:
    for descriptor, value in message.ListFields():
        path = prefix + descriptor.name
        if descriptor.type == FieldDescriptor.TYPE_STRING and not descriptor.is_repeated:
            limit = LENGTH_LIMITS.get(descriptor.name)
            if limit is not None and len(value) > limit:
                yield FieldViolation(
                    path,
                    f"{path} is {len(value):,} characters long; at most {limit} are allowed",
                )
        elif descriptor.type == FieldDescriptor.TYPE_ENUM:
            numbers = value if descriptor.is_repeated else (value,)
            enum = descriptor.enum_type
            assert enum is not None
            for number in numbers:
                if number not in enum.values_by_number:
                    names = ", ".join(v.name for v in enum.values if v.number)
                    yield FieldViolation(
                        path, f"{path} = {number} is not a known value; use one of {names}"
                    )
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(descriptor):
            for item in value if descriptor.is_repeated else (value,):
                yield from _violations(item, path + ".")


def _is_map(descriptor: FieldDescriptor) -> bool:
    return descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry


__all__ = [
    "LENGTH_LIMITS",
    "MAX_ID_CHARS",
    "MAX_MEDIA_TYPE_CHARS",
    "MAX_NAME_CHARS",
    "check_media_type",
    "check_request",
    "request_violations",
]
