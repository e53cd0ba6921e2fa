"""Handlers that ship with the project, for wiring checks and demos."""

from __future__ import annotations

import logging
from typing import Any

from eda.errors import PermanentError
from eda.event import Event

log = logging.getLogger(__name__)


def log_event(event: Event) -> dict[str, Any]:
    """Log one line about the event (never its payload) and report its type."""
    log.info("event %s of type %s from %s", event.id, event.type, event.source)
    return {"logged": event.type}


def fail_permanently(event: Event) -> None:
    """Always fail, permanently: shows the dead-letter queue at work."""
    raise PermanentError(f"{event.type} is handled by a handler that always fails (demo)")
