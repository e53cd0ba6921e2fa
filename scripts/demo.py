"""The first-five-minutes demo: real signed requests to the running app, then what became of them.

It signs as each sender does (GitHub, Stripe, Standard Webhooks for
CloudEvents) with the secrets the running system was given, posts through
HTTP, and reads the results back through the admin API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: How long the demo waits for every delivery to settle.
SETTLE_TIMEOUT = 60.0
#: Delivery statuses that will not change without an operator.
SETTLED = {"succeeded", "skipped", "dead"}


@dataclass(frozen=True)
class Sent:
    """One demo request: what it was meant to show, and the event id the app answered."""

    label: str
    event_id: str


def post(url: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """POST and return the JSON answer; raises RuntimeError naming the status otherwise."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310 (our own http URL)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url} answered {exc.code}: {exc.read().decode()[:300]}") from None


def get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 (our own http URL)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


def github_push(base: str, secret: str) -> Sent:
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "repository": {"full_name": "acme/shop"},
            "head_commit": {
                "id": uuid.uuid4().hex[:12],
                "message": "Fix rounding in checkout totals",
            },
            "pusher": {"name": "dana"},
        }
    ).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={signature}",
    }
    return Sent("GitHub push (signed)", post(f"{base}/webhooks/github", body, headers)["event_id"])


def stripe_payment_failed(base: str, secret: str) -> Sent:
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "type": "invoice.payment_failed",
            "data": {"object": {"customer": "cus_demo42", "amount_due": 4200, "currency": "eur"}},
        }
    ).encode()
    stamp = str(int(time.time()))
    signed = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "Stripe-Signature": f"t={stamp},v1={signed}"}
    answer = post(f"{base}/webhooks/stripe", body, headers)
    return Sent("Stripe payment failure (signed)", answer["event_id"])


def cloudevent(base: str, secret: str, label: str, event_type: str, data: Any) -> Sent:
    """A structured CloudEvent to /events, signed the Standard Webhooks way."""
    body = json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "monitoring",
            "type": event_type,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "datacontenttype": "application/json",
            "data": data,
        }
    ).encode()
    message_id, stamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/cloudevents+json",
        "webhook-id": message_id,
        "webhook-timestamp": stamp,
        "webhook-signature": f"v1,{base64.b64encode(digest).decode()}",
    }
    return Sent(label, post(f"{base}/events", body, headers)["event_id"])


def send(base: str, secrets: Mapping[str, str]) -> list[Sent]:
    """Send the demo's five requests; every answer is a durably stored event's id."""
    events_secret = secrets["EDA_WEBHOOK_SECRET_EVENTS"]
    alert = {"service": "checkout", "summary": "p99 latency 2.3 s over 5 minutes"}
    return [
        github_push(base, secrets["GITHUB_WEBHOOK_SECRET"]),
        stripe_payment_failed(base, secrets["STRIPE_WEBHOOK_SECRET"]),
        cloudevent(
            base,
            events_secret,
            "critical alert",
            "alert.triggered",
            {**alert, "severity": "critical"},
        ),
        cloudevent(
            base,
            events_secret,
            "low-severity alert",
            "alert.triggered",
            {**alert, "severity": "low"},
        ),
        cloudevent(
            base,
            events_secret,
            "event whose handler fails",
            "demo.failure",
            {"note": "its handler always fails, to show the dead-letter queue"},
        ),
    ]


def settle(base: str, token: str, sent: list[Sent]) -> list[dict[str, Any]]:
    """The events as stored once every delivery has settled (or the timeout passed)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        events = [get(f"{base}/api/events/{s.event_id}", token) for s in sent]
        done = all(
            (e["status"] in ("unrouted", "pending") and not e["deliveries"])
            or all(d["status"] in SETTLED for d in e["deliveries"])
            for e in events
        )
        if done or time.monotonic() > deadline:
            return events
        time.sleep(0.25)


def describe_delivery(delivery: dict[str, Any]) -> str:
    text = f"{delivery['handler']}: {delivery['status']}"
    outcome = delivery.get("outcome") or {}
    if outcome.get("backend") == "dry_run":
        text += " (dry run: no API key, the request it would send is recorded)"
    elif delivery["status"] == "skipped":
        text += f" ({delivery['history'][-1]['reason']})"
    return text


def summary(base: str, token: str, sent: list[Sent], lanes: Mapping[str, str]) -> str:
    """A readable account of the demo: events, lanes, deliveries, the dead letter."""
    lines = ["", "What happened:"]
    for item, event in zip(sent, settle(base, token, sent), strict=True):
        lines.append(
            f"  {item.label:<32} {event['type']:<18} lane {lanes[event['type']]:<9} "
            f"{event['status']:<10} {event['id']}"
        )
        lines.extend(f"      {describe_delivery(d)}" for d in event["deliveries"])
    items = get(f"{base}/api/dead-letters?limit=5", token)["dead_letters"]
    lines.append("")
    lines.append(f"Dead-letter queue ({len(items)} shown):")
    lines.extend(
        f"  {x['id']}  {x['error_class']}: {x['error']}  (attempts {x['attempts']})" for x in items
    )
    return "\n".join(lines)
