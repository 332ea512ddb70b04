"""Identifiers: a readable prefix, then time-ordered so that newest-first is a sort."""

from __future__ import annotations

import secrets

from .clock import Clock


def new_id(prefix: str, clock: Clock) -> str:
    """``<prefix>_<12 hex digits of ms since epoch><16 random hex digits>``."""
    millis = int(clock.now() * 1000)
    return f"{prefix}_{millis:012x}{secrets.token_hex(8)}"
