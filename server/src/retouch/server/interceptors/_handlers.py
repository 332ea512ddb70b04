"""What the interceptors that wrap handlers share: a handler's kind, swapping its
behaviour, and reading the status a call ended with from its context."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:  # generic only in the type stubs
    Handler = grpc.RpcMethodHandler

KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def kind_of(handler: Handler) -> str:
    """``"unary_stream"`` and so on: the behaviour the handler has."""
    return next(name for name in KINDS if getattr(handler, name) is not None)


def replace_behaviour(handler: Handler, kind: str, behaviour: Callable[..., Any]) -> Handler:
    """``handler`` with its ``kind`` behaviour swapped for ``behaviour``."""
    # RpcMethodHandler is a namedtuple at run time.
    replaced: Handler = handler._replace(**{kind: behaviour})  # type: ignore[attr-defined]
    return replaced


def code_of(context: Any) -> grpc.StatusCode:
    """The status code a call's context says it ended with (OK when none was set)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return _CODES.get(code, grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK


__all__ = ["KINDS", "Handler", "code_of", "kind_of", "replace_behaviour"]
