"""Who is calling: API keys to tenants, and the subject a tenant acts for."""

from __future__ import annotations

import contextvars
import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .config import TenantConfig, hash_key
from .errors import InvalidArgument, Unauthenticated, echo

AUTHORIZATION_HEADER = "authorization"
SUBJECT_HEADER = "x-retouch-subject"
SERVICE_SUBJECT = "service"
"""The subject of calls a tenant makes for itself rather than for one of its users."""

MAX_SUBJECT_ID_CHARS = 128
MAX_SUBJECT_CHARS = len("guest:") + MAX_SUBJECT_ID_CHARS
_SUBJECT = re.compile(rf"(user|guest):[A-Za-z0-9._@+-]{{1,{MAX_SUBJECT_ID_CHARS}}}")


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated tenant acting for a subject; together they own jobs and results."""

    tenant: str
    subject: str
    admin: bool = False

    @property
    def owner(self) -> str:
        """``<tenant>/<subject>``: the prefix of everything this caller owns."""
        return f"{self.tenant}/{self.subject}"


_current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("retouch_caller")


def current_caller() -> Caller:
    """The caller of the RPC being handled (set by the auth interceptor)."""
    try:
        return _current_caller.get()
    except LookupError:
        raise Unauthenticated(
            "this call was not authenticated", reason="MISSING_CREDENTIALS"
        ) from None


def set_current_caller(caller: Caller) -> contextvars.Token[Caller]:
    return _current_caller.set(caller)


class KeyRing:
    """Matches bearer keys against the configured hashes."""

    def __init__(self, tenants: Iterable[TenantConfig]) -> None:
        self._by_hash = {t.key_sha256.lower(): t for t in tenants}

    def authenticate(self, authorization: Sequence[str], subject: Sequence[str]) -> Caller:
        """The caller for the values of the ``authorization`` header and the optional
        subject header, as sent: more than one of either is refused, never resolved by
        picking one (a proxy that appends its own header must not decide who calls)."""
        if len(authorization) > 1:
            raise Unauthenticated(
                f"{len(authorization)} authorization headers were sent: send exactly one",
                reason="DUPLICATE_CREDENTIALS",
            )
        caller = self._caller(authorization[0] if authorization else None)
        if len(subject) > 1:
            raise InvalidArgument(
                SUBJECT_HEADER,
                f"{len(subject)} {SUBJECT_HEADER} headers were sent: send at most one",
            )
        return dataclasses.replace(caller, subject=parse_subject(subject[0] if subject else None))

    def _caller(self, authorization: str | None) -> Caller:
        """The tenant's caller, acting for itself, for one ``authorization`` value."""
        if not authorization:
            raise Unauthenticated(
                "missing credentials: send metadata 'authorization: Bearer <api key>'",
                reason="MISSING_CREDENTIALS",
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated(
                "malformed credentials: expected 'authorization: Bearer <api key>'",
                reason="MALFORMED_CREDENTIALS",
            )
        tenant = self._by_hash.get(hash_key(key.strip()))
        if tenant is None:
            raise Unauthenticated(
                "the API key is not valid: check the key or ask for a new one",
                reason="INVALID_API_KEY",
            )
        return Caller(tenant=tenant.name, subject=SERVICE_SUBJECT, admin=tenant.admin)


def parse_subject(value: str | None) -> str:
    """Validate the subject header; absent means the tenant acts for itself."""
    if not value:
        return SERVICE_SUBJECT
    if not _SUBJECT.fullmatch(value):
        raise InvalidArgument(
            SUBJECT_HEADER,
            f"subject {echo(value)} is not valid: use 'user:<id>' or 'guest:<id>' "
            "with an id of letters, digits and . _ @ + -",
        )
    return value
