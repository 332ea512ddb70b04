"""The server's TLS: its certificate and key, and optionally a client CA for mutual TLS.

The files are read and checked with :mod:`ssl` before gRPC sees them, so a wrong path,
a key that does not match its certificate or a bundle that is not PEM is a config
error naming the setting, at start-up and in ``retouch-server check-config``, rather
than a failed bind or handshakes that fail later.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from .config import ConfigError, ServerConfig


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials for ``config``, or ``None`` when the server listens in plaintext."""
    if not config.tls:
        return None
    cert = _read("tls_cert_file", config.tls_cert_file)
    key = _read("tls_key_file", config.tls_key_file)
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"tls_cert_file / tls_key_file: not a PEM certificate chain with its key ({exc.reason})"
        ) from None
    client_ca: bytes | None = None
    if config.tls_client_ca_file:
        client_ca = _read("tls_client_ca_file", config.tls_client_ca_file)
        try:
            check.load_verify_locations(cafile=config.tls_client_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"tls_client_ca_file: not a PEM CA bundle ({exc.reason})") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None


__all__ = ["server_credentials"]
