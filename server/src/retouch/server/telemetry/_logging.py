"""Log records that carry the trace they belong to.

:class:`TraceContextFilter` adds ``trace_id`` and ``span_id`` (lowercase hex, empty
outside a span) to every record that passes a handler. ``RETOUCH_LOG_FORMAT=json``
writes each record as one JSON object per line; otherwise lines read as before, with
`` trace_id=… span_id=…`` appended while a span is active.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Literal

from opentelemetry import trace

LogFormat = Literal["plain", "json"]

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMAT_VARIABLE = "RETOUCH_LOG_FORMAT"


class TraceContextFilter(logging.Filter):
    """Sets ``record.trace_id`` and ``record.span_id`` from the active span."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = ""
            record.span_id = ""
        return True


class PlainFormatter(logging.Formatter):
    """The classic one-line format, with the trace context appended when there is one."""

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", "")
        if not trace_id:
            return line
        first, newline, rest = line.partition("\n")
        suffix = f" trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"
        return first + suffix + newline + rest


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace_id, span_id, and
    ``exception`` with the formatted traceback when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", ""),
            "span_id": getattr(record, "span_id", ""),
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            # An access-log line: its fields are top-level keys, for log pipelines.
            entry.update({k: v for k, v in fields.items() if k != "trace_id" or v})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def log_format(environ: Mapping[str, str] | None = None) -> LogFormat:
    """``json`` when ``RETOUCH_LOG_FORMAT=json``, else ``plain``."""
    env = os.environ if environ is None else environ
    value = env.get(LOG_FORMAT_VARIABLE, "").strip().lower()
    return "json" if value == "json" else "plain"


def configure_logging(level: str, format: LogFormat | None = None) -> logging.Handler:
    """Send the root logger's records to stderr at ``level``, in ``format`` (default:
    from ``RETOUCH_LOG_FORMAT``), each carrying its trace context. Returns the handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(
        JsonFormatter() if (format or log_format()) == "json" else PlainFormatter()
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
