"""Structured logs: one JSON object a line, or readable key=value on a terminal.

Every line about a delivery carries its ``event_id``, ``handler``, ``delivery``
and ``task_id``: :func:`context` sets them for a block of code (a task), and
``extra={...}`` on a single call adds them to one line. Payloads and secrets
are never logged: only these named fields and the message are written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

#: The fields a log line may carry besides its message.
FIELDS = ("event_id", "handler", "delivery", "task_id", "lane", "source", "type")
#: Third-party loggers that write request and response bodies (event payloads, tool
#: arguments) below WARNING: the model SDK (``anthropic._base_client`` logs every request's
#: JSON at DEBUG), its HTTP clients, and the MCP SDK. Held at WARNING whatever
#: ``EDA_LOG_LEVEL`` says; their warnings and errors still show.
THIRD_PARTY = ("anthropic", "httpx", "httpx2", "httpcore", "urllib3", "mcp")
#: Longest exception message a log line carries (see :func:`error_summary`).
MAX_ERROR_TEXT = 200

_context: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "eda_log", default=()
)


@contextmanager
def context(**fields: str) -> Iterator[None]:
    """Add these fields to every log line written inside the block (thread- and task-local)."""
    merged = {**dict(_context.get()), **{k: v for k, v in fields.items() if v}}
    token = _context.set(tuple(merged.items()))
    try:
        yield
    finally:
        _context.reset(token)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    found: dict[str, Any] = dict(_context.get())
    for name in FIELDS:
        value = getattr(record, name, None)
        if value:
            found[name] = value
    return found


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the delivery fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        extra = " ".join(f"{k}={v}" for k, v in fields_of(record).items())
        text = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{text} {extra}" if extra else text
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def error_summary(exc: BaseException, limit: int = MAX_ERROR_TEXT) -> str:
    """``ExceptionClass: message`` for a log line: the first line only, at most ``limit`` long.

    An exception's text can embed whatever its raiser had at hand (a payload, a
    response body); the class and a bounded first line say what happened without it.
    """
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class HoldThirdParty(logging.Filter):
    """Let through only WARNING and up from the :data:`THIRD_PARTY` loggers.

    Their levels are set too, but a library may lower its own level after we set it
    (the model SDK does at import when ``ANTHROPIC_LOG`` is set): the filter on the
    handler is what holds whatever happens to the loggers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(
            record.name == name or record.name.startswith(name + ".") for name in THIRD_PARTY
        )


def configure(level: str = "INFO", style: str = "auto") -> None:
    """Send every log line to stderr in the chosen style (``json``, ``text``, ``auto``)."""
    if style == "auto":
        style = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if style == "json" else TextFormatter())
    handler.addFilter(HoldThirdParty())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
