"""Dedupe keys: what makes a second delivery of the same thing a duplicate.

A key is only worth what the signature covers: a sender's id taken from a header
the signature does not cover (GitHub's ``X-GitHub-Delivery``, a CloudEvent's
``ce-id`` in binary mode) can be changed by anyone who captured one delivery, and
every change would store the event again. So each key is built from signed data:
an id inside the signed body (Stripe's ``id``, Slack's ``event_id``, a structured
CloudEvent's ``source`` + ``id``), a signed header (Standard Webhooks'
``webhook-id``), or, when the sender signs nothing better, the digest of the
signed body itself (GitHub signs only the body).

Each face and source has a namespace of its own (``webhooks/stripe``, ``events``,
``events/<sender>`` for each CloudEvents sender with a token, ``api``), so that
nothing sent to one can make another's delivery a duplicate.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

from eda.event import MAX_FIELD_LENGTH

#: What a key's part keeps as it is; the rest is percent-encoded.
SAFE = "/@.-_~+="
#: A part that percent-encoding leaves unchanged (most ids, every digest).
_UNQUOTED = re.compile(r"[A-Za-z0-9/@.\-_~+=]*")
#: The namespace of the CloudEvents endpoint, ``POST /events``.
EVENTS = "events"
#: The namespace of keys an operator gives through the admin API.
ADMIN_API = "api"


def events_sender(sender: str) -> str:
    """The namespace of a CloudEvents sender known by its token (``EDA_EVENTS_TOKEN_<SENDER>``)."""
    return f"{EVENTS}/{sender}"


def webhooks(source: str) -> str:
    """The namespace of ``/webhooks/<source>``."""
    return f"webhooks/{source}"


def key(namespace: str, *parts: str) -> str:
    """``namespace:part:…``, each part percent-encoded so that ``:`` only ever separates.

    A key longer than an event's dedupe key may be is replaced by its SHA-256 digest
    (still under the namespace), so that a long id is never a reason to lose dedupe.
    """
    # surrogatepass: a lone surrogate is refused by the event, not by a key built first.
    encoded = (
        part if _UNQUOTED.fullmatch(part) else quote(part, safe=SAFE, errors="surrogatepass")
        for part in parts
    )
    text = ":".join([namespace, *encoded])
    if len(text) <= MAX_FIELD_LENGTH:
        return text
    return f"{namespace}:sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def signed_body(namespace: str, body: bytes) -> str:
    """The key of a delivery known only by its signed body (the body's SHA-256)."""
    return key(namespace, "body", hashlib.sha256(body).hexdigest())
