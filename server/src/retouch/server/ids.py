"""Identifiers: a readable prefix, then time-ordered so that newest-first is a sort."""

from __future__ import annotations

import re
import secrets

from .clock import Clock


def new_id(prefix: str, clock: Clock) -> str:
    """``<prefix>_<12 hex digits of ms since epoch><16 random hex digits>``."""
    millis = int(clock.now() * 1000)
    return f"{prefix}_{millis:012x}{secrets.token_hex(8)}"


_ID_DIGITS = re.compile(r"[0-9a-f]{28}")


def is_id(prefix: str, value: str) -> bool:
    """Whether ``value`` has the shape :func:`new_id` gives ids of ``prefix``: checked
    before a caller's id reaches a database, where a NUL or an odd byte is an error."""
    head, _, digits = value.partition("_")
    return head == prefix and _ID_DIGITS.fullmatch(digits) is not None
