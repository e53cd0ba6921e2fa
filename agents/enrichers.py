"""Enrichers that ship with the default agents (pipeline stages that add data)."""

from __future__ import annotations

from typing import Any

from agents.context import DeliveryContext
from eda.event import Event

#: Earlier events of the same type an enricher hands the agent.
RECENT_EVENTS = 5


def recent_events(event: Event, context: DeliveryContext) -> list[dict[str, Any]]:
    """The latest earlier events of the same type, with their status: has it happened before?"""
    history = context.core.history(event.type, limit=RECENT_EVENTS + 1)
    return [
        {
            "id": stored.event.id,
            "time": stored.event.timestamp,
            "status": stored.status,
            "payload": stored.event.payload,
        }
        for stored in history
        if stored.event.id != event.id
    ][:RECENT_EVENTS]
