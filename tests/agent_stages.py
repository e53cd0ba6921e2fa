"""Pipeline stages (filters and enrichers) the agent tests name by import path."""

from __future__ import annotations

from typing import Any

from agents.context import DeliveryContext
from eda.event import Event


def production_only(event: Event, context: DeliveryContext) -> bool:
    """Pass events from production only."""
    return isinstance(event.payload, dict) and event.payload.get("env") == "production"


def owner(event: Event, context: DeliveryContext) -> dict[str, Any] | None:
    """The owning team of the payload's service; nothing for a service nobody owns."""
    owners = {"checkout": "team-payments"}
    service = event.payload.get("service") if isinstance(event.payload, dict) else None
    return {"team": owners[service]} if service in owners else None
