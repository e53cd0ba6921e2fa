"""Python tools for the agent tests; each run is noted in Redis, so a test sees what executed.

``executed(client, prefix, event_id)`` lists the runs of one delivery, from this
process or from a Celery worker alike.
"""

from __future__ import annotations

import json
from typing import Any

from agents.context import DeliveryContext
from agents.toolbox import python_tool


def _note(context: DeliveryContext, name: str, arguments: dict[str, Any]) -> None:
    key = f"{context.settings.prefix}:test-tool-runs:{context.event.id}"
    context.core.redis.rpush(key, json.dumps({"name": name, "input": arguments}))


def executed(client: Any, prefix: str, event_id: str) -> list[dict[str, Any]]:
    """Every run of a test tool for this event, in order."""
    key = f"{prefix}:test-tool-runs:{event_id}"
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


@python_tool(
    "lookup_service",
    "Who owns a service and how it is doing.",
    {
        "type": "object",
        "properties": {
            "service": {"type": "string", "description": "The service name."},
            "detail": {"type": "string", "enum": ["owner", "status"]},
        },
        "required": ["service"],
        "additionalProperties": False,
    },
)
def lookup_service(arguments: dict[str, Any], context: DeliveryContext) -> dict[str, Any]:
    _note(context, "lookup_service", arguments)
    return {"service": arguments["service"], "owner": "team-payments", "status": "degraded"}


@python_tool(
    "page_team",
    "Page a team (a test stand-in for an action with effects).",
    {
        "type": "object",
        "properties": {"team": {"type": "string"}, "message": {"type": "string"}},
        "required": ["team", "message"],
        "additionalProperties": False,
    },
)
def page_team(arguments: dict[str, Any], context: DeliveryContext) -> str:
    _note(context, "page_team", arguments)
    return f"paged {arguments['team']}"


@python_tool(
    "broken_lookup",
    "A lookup whose backend is down.",
    {"type": "object", "properties": {"service": {"type": "string"}}},
)
def broken_lookup(arguments: dict[str, Any], context: DeliveryContext) -> str:
    _note(context, "broken_lookup", arguments)
    raise RuntimeError("the lookup backend is down")


lineage_schema: dict[str, Any] = {"type": "object", "properties": {}}


@python_tool("show_lineage", "The lineage ids this delivery's tools run with.", lineage_schema)
def show_lineage(arguments: dict[str, Any], context: DeliveryContext) -> dict[str, str]:
    return context.lineage()


not_a_tool = "a string, not a PythonTool"

bad_schema_tool = python_tool("bad_schema", "x", {"type": "object", "properties": 3})(
    lambda arguments, context: None
)
