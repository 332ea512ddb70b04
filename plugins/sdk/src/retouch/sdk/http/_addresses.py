"""Where a provider may fetch output URLs from: host allow-lists and address filters
against server-side request forgery (loopback, private, link-local, cloud metadata)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
"""Cloud instance-metadata endpoints (AWS, ECS, AWS over IPv6, Alibaba). All but the
last are link-local or private anyway; they are named so that an allow-list of
private networks can never let them through."""


class AddressRefused(OSError):
    """A host resolved only to addresses the policy refuses."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which IP addresses provider downloads may connect to.

    By default only globally routable addresses: loopback, private (RFC 1918, unique
    local), link-local, shared (CGNAT), multicast, reserved and unspecified addresses
    are refused, and cloud metadata endpoints always are. ``allow`` lists networks to
    accept anyway: a test's fake server (``AddressPolicy.allowing("127.0.0.1")``) or a
    deployment whose provider serves outputs from a private network.
    """

    allow: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def allowing(cls, *networks: str) -> AddressPolicy:
        """A policy that also accepts ``networks`` (``"127.0.0.1"``, ``"10.0.0.0/8"``)."""
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def permits(self, address: IPAddress | str) -> bool:
        """Whether connecting to ``address`` is allowed."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip in METADATA_ADDRESSES:
            return False
        if any(ip in network for network in self.allow if network.version == ip.version):
            return True
        return ip.is_global and not ip.is_multicast

    def check(self, address: IPAddress | str, *, host: str) -> None:
        """Raise :class:`AddressRefused` unless ``address`` is allowed."""
        if not self.permits(address):
            raise AddressRefused(f"{host} is at {address}, an address downloads may not reach")


class GuardedResolver(AbstractResolver):
    """A resolver that drops addresses the policy refuses, for every host except the
    ``trusted`` ones (the provider's configured API host, which the operator chose).

    Filtering at resolution, where the connection is made, means a name that resolves
    to a private address on the second lookup (DNS rebinding) is refused too.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        trusted: Iterable[str] = (),
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._policy = policy
        self._trusted = {host.lower() for host in trusted}
        self._resolver = resolver if resolver is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        if host.lower() in self._trusted:
            return results
        allowed = [r for r in results if self._policy.permits(r["host"])]
        if not allowed:
            shown = ", ".join(sorted({r["host"] for r in results})) or "nothing"
            raise AddressRefused(
                f"{host} resolves to {shown}, which downloads may not reach (loopback, "
                f"private, link-local or metadata addresses are refused)"
            )
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Whether ``host`` matches one of ``patterns``: an exact name or address, or
    ``*.example.com`` for any subdomain of example.com (not example.com itself)."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, if it is an IP literal (brackets allowed)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
