"""Subscribe a handler: ``subscribe.py EVENT_TYPES HANDLER_ID``, effective without a restart.

EVENT_TYPES is comma-separated (``alert.triggered,code.*``); HANDLER_ID names a
registered handler, an agent, or an import path ``package.module:function``.
"""

from __future__ import annotations

from typing import Any

from scripts.gantz import arguments, connect, run


def main(argv: list[str]) -> list[dict[str, Any]]:
    """The subscriptions created, one per event type."""
    event_types, handler = arguments(argv, ("event_types", "handler_id"), required=2)
    assert event_types is not None and handler is not None
    patterns = [part.strip() for part in event_types.split(",") if part.strip()]
    return connect().subscribe(patterns, handler)


if __name__ == "__main__":
    run(main)
