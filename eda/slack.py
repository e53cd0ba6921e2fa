"""An event as a Slack message: Block Kit blocks for an incoming webhook, not a JSON dump.

Made for ``notification.requested`` (what AlertResponder publishes: a team, a
severity, a summary), it reads any event: the title is the payload's ``title``
(else the event type), the body its ``summary`` (or ``message``, ``text``), and
the other short fields become the message's fields. Text from the payload is
escaped, so an event can neither mention ``@channel`` nor forge a link.
"""

from __future__ import annotations

from typing import Any

from eda.event import Event

#: Payload fields that make the body, in order of preference.
BODY_FIELDS = ("summary", "message", "text", "description")
#: Payload fields shown first among the fields, when present.
LEADING_FIELDS = ("severity", "team", "service", "channel")
#: Slack's limits: a header's text, a section's text, a field's text, fields per section.
MAX_HEADER, MAX_TEXT, MAX_FIELD, MAX_FIELDS = 150, 3000, 2000, 10
#: An emoji per severity, so the channel sees at a glance what matters.
SEVERITY_MARKS = {
    "critical": ":red_circle:",
    "high": ":large_orange_circle:",
    "medium": ":large_yellow_circle:",
    "low": ":white_circle:",
}


def escape(text: str) -> str:
    """Text as Slack's mrkdwn shows it literally (``&``, ``<`` and ``>`` escaped)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message(event: Event) -> dict[str, Any]:
    """The incoming-webhook message for ``event``: ``text`` (the notification) and ``blocks``."""
    payload = event.payload if isinstance(event.payload, dict) else {"message": event.payload}
    title = str(payload.get("title") or event.type)
    severity = str(payload.get("severity", "")).lower()
    mark = SEVERITY_MARKS.get(severity, ":bell:")
    body = next((str(payload[key]) for key in BODY_FIELDS if payload.get(key)), "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut(f"{title}", MAX_HEADER)}}
    ]
    if body:
        text = cut(f"{mark} {escape(body)}", MAX_TEXT)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    fields = _fields(payload)
    if fields:
        blocks.append({"type": "section", "fields": fields})
    context = f"{escape(event.type)} · from {escape(event.source)} · event `{event.id}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": cut(f"{title}: {body}" if body else title, MAX_TEXT), "blocks": blocks}


def _fields(payload: dict[str, Any]) -> list[dict[str, str]]:
    """Short scalar fields of the payload as ``*name*\\nvalue`` pairs, the leading ones first."""
    names = [k for k in LEADING_FIELDS if k in payload]
    names += [k for k in payload if k not in names and k not in (*BODY_FIELDS, "title")]
    fields = []
    for name in names:
        value = payload[name]
        if isinstance(value, dict | list) or value is None or value == "":
            continue
        text = cut(f"*{escape(str(name))}*\n{escape(str(value))}", MAX_FIELD)
        fields.append({"type": "mrkdwn", "text": text})
    return fields[:MAX_FIELDS]
