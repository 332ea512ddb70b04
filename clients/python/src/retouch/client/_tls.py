"""TLS for the client's channel: which CA to trust, which name to expect, and the
client certificate that mutual TLS asks for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True, slots=True)
class TLS:
    """How the client checks the server over TLS, and proves itself for mutual TLS.

    ``ca_file`` is a PEM bundle of the CAs to trust (default: gRPC's bundled roots);
    ``server_name`` overrides the name the server's certificate must carry (when the
    address is an IP or a tunnel); ``cert_file`` and ``key_file`` are the client's
    certificate chain and key, for servers that require one.
    """

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS)")

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials, the files read now (OSError names a missing one)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """Channel options this asks for (the server name override)."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()
