"""``database`` URLs: which backend they name, and where an embedded one lives."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

Dialect = Literal["sqlite", "postgresql"]


class DatabaseUrlError(ValueError):
    """A ``database`` URL that names no backend retouch has."""


def dialect_of(url: str) -> Dialect:
    """The backend a ``database`` URL names, or :class:`DatabaseUrlError`."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or url == "sqlite:///":
            raise DatabaseUrlError(
                f"database {url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        if not urlsplit(url).hostname and "host=" not in url:
            raise DatabaseUrlError(f"database {url!r}: name the host, postgresql://user@host/db")
        return "postgresql"
    raise DatabaseUrlError(
        f"database {url!r}: expected sqlite:///path or postgresql://user@host:port/db"
    )


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///`` URL (``sqlite:////abs`` is absolute, like SQLAlchemy's)."""
    return url.removeprefix("sqlite:///")


def default_url(data_dir: Path) -> str:
    """The embedded database under ``data_dir``."""
    return "sqlite:///" + str((data_dir / "retouch.db").resolve())
