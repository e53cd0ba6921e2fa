"""The senders: how each one signs, which secret it uses, and what its deliveries mean.

A reader turns a verified, parsed delivery into an :class:`Inbound` (an event
to store) or a :class:`Reply` (answered without storing: GitHub's ping, Slack's
URL verification). Event types come from the type map (``types.yaml``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eda.errors import InvalidInput
from eda.event import MAX_FIELD_LENGTH
from eda.settings import SOURCE_NAME, WEBHOOK_SECRET_PREFIX
from webhooks import verify
from webhooks.mapping import TypeMap

#: Media types every source accepts.
JSON_TYPES = ("application/json",)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Inbound:
    """A delivery that becomes an event."""

    event_type: str
    payload: Any
    #: The delivery's id as the signature covers it; None: the signed body is its identity.
    delivery_id: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class Reply:
    """A delivery answered without storing an event."""

    status: int
    body: dict[str, Any]


#: (parsed body, headers with lower-case names, type map, source name) -> what it means.
Reader = Callable[[Any, verify.Headers, TypeMap, str], "Inbound | Reply"]


@dataclass(frozen=True)
class Source:
    """One sender: its secret's variable, its signature scheme and its reader."""

    name: str
    secret_variable: str
    verify: verify.Verifier
    read: Reader
    media_types: tuple[str, ...] = JSON_TYPES


def text_field(value: Any) -> str | None:
    """A string fit for an event's optional text fields, or None (never a reason to refuse)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_LENGTH:
        return None
    return None if _CONTROL.search(value) else value


def delivery_id(value: Any) -> str | None:
    """A sender's id for dedupe, when it is a non-empty string."""
    return value if isinstance(value, str) and value.strip() else None


def _field(document: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def read_github(
    document: Any, headers: verify.Headers, types: TypeMap, source: str
) -> Inbound | Reply:
    """``X-GitHub-Event`` plus the payload's ``action``; dedupe on the signed body.

    GitHub signs the body alone: ``X-GitHub-Delivery`` and ``X-GitHub-Event`` can be
    changed by anyone who captured one delivery. So the body is what dedupes (a resent
    body is a duplicate whatever its headers say), and ``X-GitHub-Delivery``, which
    GitHub always sends, is required, as a check that GitHub sent it.
    """
    event = headers.get("x-github-event", "").strip()
    if not event:
        raise InvalidInput("X-GitHub-Event", "the header is missing")
    if not headers.get("x-github-delivery", "").strip():
        raise InvalidInput(
            "X-GitHub-Delivery", "the header is missing; GitHub sends it with every delivery"
        )
    if event == "ping":
        return Reply(200, {"status": "pong", "hook_id": _field(document, "hook_id")})
    action = _field(document, "action")
    action = action if isinstance(action, str) and action else ""
    keys = [f"{event}.{action}", event] if action else [event]
    return Inbound(
        types.resolve(source, keys, {"event": event, "action": action}),
        document,
        None,
        text_field(_field(document, "repository", "full_name")),
    )


def read_stripe(
    document: Any, headers: verify.Headers, types: TypeMap, source: str
) -> Inbound | Reply:
    """The event's ``type``; dedupe on its ``id``."""
    event_type, event_id = _field(document, "type"), _field(document, "id")
    if not isinstance(event_type, str) or not isinstance(event_id, str):
        raise InvalidInput("body", "a Stripe event has a string 'id' and 'type'")
    return Inbound(
        types.resolve(source, [event_type], {"type": event_type}),
        document,
        delivery_id(event_id),
        text_field(_field(document, "data", "object", "id")),
    )


def read_slack(
    document: Any, headers: verify.Headers, types: TypeMap, source: str
) -> Inbound | Reply:
    """Events API callbacks by inner event type; dedupe on ``event_id`` (retries carry it too).

    Requests without an ``event_id`` (``app_rate_limited``) dedupe on their signed body.
    """
    outer = _field(document, "type")
    if not isinstance(outer, str):
        raise InvalidInput("body", "a Slack request has a string 'type'")
    if outer == "url_verification":
        challenge = _field(document, "challenge")
        if not isinstance(challenge, str):
            raise InvalidInput("challenge", "url_verification carries a string 'challenge'")
        return Reply(200, {"challenge": challenge})
    event = _field(document, "event", "type") if outer == "event_callback" else outer
    if not isinstance(event, str):
        raise InvalidInput("event.type", "an event_callback carries an event with a type")
    subtype = _field(document, "event", "subtype")
    subtype = subtype if isinstance(subtype, str) and subtype else ""
    keys = [f"{event}.{subtype}", event] if subtype else [event]
    # Slack's legacy verification token is a credential: it is not kept with the event.
    payload = {key: value for key, value in document.items() if key != "token"}
    return Inbound(
        types.resolve(source, keys, {"event": event, "subtype": subtype}),
        payload,
        delivery_id(_field(document, "event_id")),
        text_field(_field(document, "event", "channel")),
    )


def read_standard(
    document: Any, headers: verify.Headers, types: TypeMap, source: str
) -> Inbound | Reply:
    """Any other sender: the type it names, else ``event``; dedupe on its signed message id.

    The message id is ``webhook-id``, or ``svix-id`` from senders built on Svix.
    """
    # The payload's type is covered by the signature, a header is not: prefer the payload.
    named = _field(document, "type")
    if not isinstance(named, str) or not named.strip():
        named = headers.get("x-event-type", "").strip() or "event"
    return Inbound(
        types.resolve(source, [named], {"type": named}),
        document,
        verify.message_id(headers),
    )


#: The senders with a scheme of their own; every other name uses Standard Webhooks.
PROVIDERS: dict[str, Source] = {
    "github": Source(
        "github",
        "GITHUB_WEBHOOK_SECRET",
        verify.github,
        read_github,
        (*JSON_TYPES, "application/x-www-form-urlencoded"),
    ),
    "stripe": Source("stripe", "STRIPE_WEBHOOK_SECRET", verify.stripe, read_stripe),
    "slack": Source("slack", "SLACK_SIGNING_SECRET", verify.slack, read_slack),
}


#: Names ``/webhooks/<name>`` refuses, and why.
RESERVED = {
    # Its secret is the one of POST /events: a message signed for one would pass the other.
    "events": "'events' is reserved: send CloudEvents to /events",
}


def secret_variable(source: str) -> str:
    """The variable holding a Standard Webhooks source's secret."""
    return f"{WEBHOOK_SECRET_PREFIX}{source.upper()}"


def source_for(name: str) -> Source:
    """The sender behind ``/webhooks/<name>``; InvalidInput for a name that cannot be one."""
    if name in PROVIDERS:
        return PROVIDERS[name]
    if not SOURCE_NAME.match(name):
        raise InvalidInput(
            "source", "a source name is lower-case letters, digits and _ (at most 32)"
        )
    if name in RESERVED:
        raise InvalidInput("source", RESERVED[name])
    return _standard_source(name)


@lru_cache(maxsize=256)
def _standard_source(name: str) -> Source:
    """A Standard Webhooks sender, built once a name (any name may come: the cache is bounded)."""
    return Source(name, secret_variable(name), verify.standard, read_standard)
