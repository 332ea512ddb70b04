"""``grpc.health.v1.Health`` with ``List``, which grpcio-health-checking's servicer lacks.

Its asyncio servicer answers ``Check`` and ``Watch`` only, so ``List`` fell through to
the generated base class: UNIMPLEMENTED, and a traceback in the log on every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

# The typeshed stubs predate List and its messages; the installed module has them.
_messages: Any = health_pb2


class HealthServicer(health_aio.HealthServicer):
    """The reference asyncio health servicer, plus ``List`` over the same statuses."""

    async def List(self, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        """Every registered service and its status: a snapshot, as the protocol allows."""
        statuses: Mapping[str, int] = getattr(self, "_server_status")  # noqa: B009
        return _messages.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in dict(statuses).items()
            }
        )


__all__ = ["HealthServicer"]
