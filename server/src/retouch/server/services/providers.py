"""The Providers service: what the loaded plugins can do, cost, and how healthy they are."""

from __future__ import annotations

from typing import Any

from grpc import aio

from retouch.v1 import providers_pb2 as pb
from retouch.v1 import providers_pb2_grpc

from ..auth import current_caller
from ..breaker import Breakers
from ..convert import OPERATIONS_FROM_PROTO, provider_info
from ..errors import InvalidArgument
from ..registry import ProviderRegistry
from ..routing import LatencyTracker
from .rpc import rpc


class ProvidersService(providers_pb2_grpc.ProvidersServicer):
    """Implements ``retouch.v1.Providers``."""

    def __init__(
        self, registry: ProviderRegistry, latency: LatencyTracker, breakers: Breakers | None = None
    ) -> None:
        self._registry = registry
        self._latency = latency
        self._breakers = breakers

    @rpc
    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListProvidersResponse:
        current_caller()
        operation = None
        if request.operation:
            operation = OPERATIONS_FROM_PROTO.get(request.operation)
            if operation is None:
                raise InvalidArgument("operation", "unknown operation")
        providers = [
            provider_info(
                loaded,
                recent_latency_ms=self._latency.median(name),
                breaker=self._breakers.snapshot(name) if self._breakers else None,
            )
            for name, loaded in sorted(self._registry.providers.items())
            if operation is None or loaded.manifest.can(operation)
        ]
        return pb.ListProvidersResponse(providers=providers)
