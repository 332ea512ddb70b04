"""The RPC edge ends a call once: never a second abort on a call that has ended."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

from retouch.server.errors import InvalidArgument
from retouch.server.services.rpc import rpc


class EndedContext:
    """A servicer context whose call has already ended (cancelled by the caller, or by
    a stopping server); like gRPC's, it refuses to be aborted."""

    def done(self) -> bool:
        return True

    async def abort_with_status(self, status: grpc.Status) -> None:
        raise AssertionError("abort on a call that has already ended")


class Service:
    @rpc
    async def Refuses(self, request: object, context: Any) -> None:
        raise InvalidArgument("data", "refused after the call ended")

    @rpc
    async def Breaks(self, request: object, context: Any) -> None:
        raise RuntimeError("broken after the call ended")


async def test_a_refusal_after_the_call_ended_does_not_abort_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await Service().Refuses(object(), EndedContext())
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_an_unexpected_error_after_the_call_ended_is_logged_once_without_abort(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await Service().Breaks(object(), EndedContext())
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.getMessage() == "unexpected error in Service.Breaks"
