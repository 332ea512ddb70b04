"""Binding the listening address, with a one-line reason when it cannot be had.

gRPC reports a taken port as a bare ``RuntimeError`` after its C core has logged its
own line; the address is probed with a plain socket first so the operator reads one
sentence that says what to do.
"""

from __future__ import annotations

import errno
import socket

import grpc
from grpc import aio


class ListenError(OSError):
    """The server cannot listen on its configured address."""


class AddressInUse(ListenError):
    """Something else already listens on the configured address."""


def split_address(listen: str) -> tuple[str, int]:
    """``("127.0.0.1", 50051)`` for ``"127.0.0.1:50051"``; IPv6 hosts in brackets."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ListenError(f"listen address {listen!r}: expected host:port, e.g. 127.0.0.1:50051")
    return host.strip("[]"), int(port)


def check_address_free(listen: str) -> None:
    """Raise :class:`AddressInUse` when ``listen``'s port is taken (port 0 never is)."""
    host, port = split_address(listen)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {listen}: {exc.strerror}") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # gRPC binds with SO_REUSEADDR too: a port in TIME_WAIT is free to it.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise AddressInUse(
                        errno.EADDRINUSE,
                        f"cannot listen on {listen}: the address is already in use "
                        "(is another server running?); stop it or choose another "
                        "address with --listen",
                    ) from None
                raise ListenError(f"cannot listen on {listen}: {exc.strerror}") from None


def bind(server: aio.Server, listen: str, credentials: grpc.ServerCredentials | None = None) -> int:
    """Add ``listen`` to ``server`` (TLS when ``credentials`` are given); the bound port.

    Call :func:`check_address_free` before starting anything that the failure would
    leave half-done."""
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ListenError(f"cannot listen on {listen}")
    return port


__all__ = ["AddressInUse", "ListenError", "bind", "check_address_free", "split_address"]
