"""A bare grpc.aio unary-stream server: the floor a retouch call's latency is compared to.

One generic method, ``/bench.Echo/Stream``, with identity (bytes) serializers: it
ignores the request and streams back ``--replies`` messages, the last one
``--last-reply`` bytes long (a job's Completed event carries its inline result) and the
others small, like Accepted and Progress events. No interceptors, no storage: what is
left is gRPC, HTTP/2 and the event loop.

Run ``python -m bench.echo_server``; it logs ``echo listening on 127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Stream"
SMALL_REPLY_BYTES = 48
"""About the size of a serialized Accepted or Progress event."""
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _identity(data: bytes) -> bytes:
    return data


def echo_handler(replies: int, last_reply_bytes: int) -> grpc.GenericRpcHandler:
    """The generic handler for ``/bench.Echo/Stream``."""
    small = b"\x01" * SMALL_REPLY_BYTES
    last = b"\x02" * last_reply_bytes

    async def stream(
        request: bytes, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        for _ in range(replies - 1):
            yield small
        yield last

    method = grpc.unary_stream_rpc_method_handler(
        stream,
        request_deserializer=_identity,
        response_serializer=_identity,
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"Stream": method})


async def _serve(replies: int, last_reply_bytes: int) -> None:
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers([echo_handler(replies, last_reply_bytes)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"echo listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server", description=__doc__)
    parser.add_argument("--replies", type=int, default=3, help="messages per call (>= 1)")
    parser.add_argument("--last-reply", type=int, default=SMALL_REPLY_BYTES, help="bytes")
    args = parser.parse_args(argv)
    if args.replies < 1 or args.last_reply < 0:
        parser.error("--replies must be >= 1 and --last-reply >= 0")
    asyncio.run(_serve(args.replies, args.last_reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
