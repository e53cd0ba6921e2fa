"""Destinations: events leaving the system, POSTed to an HTTP endpoint as a handler.

A destination is declared on a route of the routes file, in place of ``handler:``::

    routes:
      - events: [code.review_posted]
        destination:
          name: reviews                       # the handler is "destination:reviews"
          url: https://hooks.example.com/eda  # or url_secret: EDA_DESTINATION_SECRET_<NAME>
          secret: EDA_DESTINATION_SECRET_REVIEWS  # Standard Webhooks signing secret (whsec_...)
          headers: {X-Team: platform}
          timeout: 10                         # seconds
          format: cloudevent                  # cloudevent (structured), envelope, or slack

It is a handler like any other (registered by the composition root), so the
delivery's lifecycle, retry policy, flow control, dead letters and records all
apply. One POST per attempt, signed with Standard Webhooks headers whose
``webhook-id`` is the delivery's idempotency key, the same over every retry:

- 2xx: succeeded;
- 408, 429 and 5xx: retried (a ``Retry-After`` is honoured);
- 410 Gone: the destination is disabled (recorded in the store), this delivery
  dead-letters, and later ones are skipped with the reason until an operator
  enables it again (``eda destinations enable NAME``);
- any other status, a redirect included (never followed): dead-lettered with the
  status and the start of the response's body.

Only ``http(s)`` URLs, and only to public addresses: a destination whose host is
(or resolves to) a loopback, private, link-local (cloud metadata, 169.254.169.254)
or otherwise non-public address is refused at start, and checked again before each
POST, unless the address is in ``EDA_DESTINATION_ALLOWED_NETWORKS`` or the
destination is marked ``internal: true`` (which still never reaches link-local
addresses). Errors name the destination, never its URL: a URL may be a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import redis
from pydantic import Field, ValidationInfo, field_validator, model_validator

from eda.config_file import ConfigModel, given, problem
from eda.errors import InvalidInput, PermanentError, TransientError, reaching_redis
from eda.event import Event
from eda.keys import Keys
from eda.settings import DESTINATION_SECRET_PREFIX, Settings
from eda.times import now_iso

if TYPE_CHECKING:
    from eda.handlers import Handler

#: What a destination's handler name starts with.
HANDLER_PREFIX = "destination:"
#: Characters of a refused response's body kept on the dead letter.
BODY_EXCERPT = 300
#: Statuses worth another try later.
RETRIED = frozenset({408, 429})
#: A destination's name: it becomes part of a handler name.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
Format = Literal["cloudevent", "envelope", "slack"]
#: A function that turns an event into (body, content type) for one format.
Renderer = Callable[[Event], tuple[bytes, str]]


class DestinationSpec(ConfigModel):
    """The ``destination:`` mapping of a route."""

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    url: str | None = None
    url_secret: str | None = None
    secret: str | None = None
    headers: dict[str, str] = {}
    timeout: float = Field(default=10.0, gt=0, le=120)
    format: Format = "cloudevent"
    internal: bool = False

    @field_validator("url_secret", "secret")
    @classmethod
    def _secret_variable(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(DESTINATION_SECRET_PREFIX):
            raise problem(
                f"{value!r} is not a destination secret: name an environment variable "
                f"{DESTINATION_SECRET_PREFIX}<NAME>"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise problem("a header value must not contain a line break", name)
            if name.lower().startswith("webhook-") or name.lower() == "content-type":
                raise problem("is set by the destination itself", name)
        return headers

    @model_validator(mode="after")
    def _one_url(self, info: ValidationInfo) -> DestinationSpec:
        if (self.url is None) == (self.url_secret is None):
            raise problem("give exactly one of url and url_secret")
        if self.name is None and self.url is None:
            raise problem("a destination whose URL is a secret needs a name", "name")
        settings: Settings = given(info, "settings")
        if self.url is not None:
            check_url(self.url, self, settings, ("url",))
        elif self.url_secret is not None:
            secret_url = settings.destination_secret(self.url_secret)
            if secret_url is not None:
                check_url(secret_url, self, settings, ("url_secret",))
        if self.secret is not None and settings.destination_secret(self.secret) is None:
            raise problem(f"{self.secret} is unset: the destination could not sign", "secret")
        return self

    @property
    def handler(self) -> str:
        """The handler name routes and records use: ``destination:<name>``."""
        host = urlsplit(self.url or "").hostname or "destination"
        return HANDLER_PREFIX + (self.name or host)


def check_url(url: str, spec: DestinationSpec, settings: Settings, at: tuple[str, ...]) -> None:
    """Refuse a URL that is not http(s) or whose host is not public (as a config problem)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise problem("must be an http:// or https:// URL with a host", *at)
    refusal = refused_host(parts.hostname, settings.destination_allowed_networks, spec.internal)
    if refusal is not None:
        raise problem(refusal, *at)


def refused_host(host: str, allowed: Iterable[str], internal: bool) -> str | None:
    """Why a destination may not reach ``host`` (an address, or a name resolved now), or None.

    A name that does not resolve is left to the check before each POST.
    """
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return None
        addresses = [ipaddress.ip_address(str(item[4][0]).split("%")[0]) for item in found]
    networks = [ipaddress.ip_network(text, strict=False) for text in allowed]
    for address in addresses:
        refusal = refused_address(address, networks, internal)
        if refusal is not None:
            return f"{host} is {refusal}" if str(address) == host else f"{host} ({refusal})"
    return None


def refused_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    internal: bool,
) -> str | None:
    """Why an address is out of a destination's reach, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_global or any(address in network for network in allowed):
        return None
    if address.is_link_local:
        kind = "a link-local address (cloud metadata lives there)"
    elif address.is_loopback:
        kind = "a loopback address"
    elif address.is_private:
        kind = "a private address"
    else:
        kind = "not a public address"
    if internal and not address.is_link_local:
        return None
    return (
        f"{address} is {kind}: destinations reach public addresses only (allow a network "
        "with EDA_DESTINATION_ALLOWED_NETWORKS, or mark the destination internal: true)"
    )


# -- what is sent ------------------------------------------------------------------------------


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    text = secret.strip().removeprefix("whsec_")
    key = base64.b64decode(text + "=" * (-len(text) % 4))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def cloudevent_body(event: Event) -> tuple[bytes, str]:
    """The event as a structured-mode CloudEvent."""
    return json.dumps(event.to_cloudevent()).encode(), "application/cloudevents+json"


def envelope_body(event: Event) -> tuple[bytes, str]:
    """The event's own envelope (the JSON the store keeps)."""
    return event.to_json().encode(), "application/json"


def slack_body(event: Event) -> tuple[bytes, str]:
    from eda.slack import message  # the Slack rendering lives there

    return json.dumps(message(event)).encode(), "application/json"


RENDERERS: dict[str, Renderer] = {
    "cloudevent": cloudevent_body,
    "envelope": envelope_body,
    "slack": slack_body,
}


@dataclass(frozen=True)
class Response:
    """What the destination answered."""

    status: int
    body: str
    retry_after: float | None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not an order: following it could reach any address."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
    """POST once; TransientError when the destination cannot be reached or times out."""
    request = urllib.request.Request(url, body, headers, method="POST")  # noqa: S310 (checked)
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            return Response(int(answer.status), "", None)
    except urllib.error.HTTPError as exc:
        text = exc.read(BODY_EXCERPT * 4).decode(errors="replace")
        return Response(exc.code, text, retry_after(exc.headers.get("retry-after")))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransientError(f"could not reach the destination: {reason}") from None


def retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# -- the disabled state ------------------------------------------------------------------------


class DisabledDestinations:
    """Destinations a 410 Gone disabled, until an operator enables them again."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def disable(self, handler: str, status: int, reason: str) -> None:
        record = json.dumps({"status": status, "reason": reason, "at": now_iso()})
        with reaching_redis():
            self.redis.hset(self.keys.destinations_disabled, handler, record)

    def why(self, handler: str) -> dict[str, Any] | None:
        with reaching_redis():
            raw = self.redis.hget(self.keys.destinations_disabled, handler)
        return json.loads(str(raw)) if raw else None

    def all(self) -> dict[str, dict[str, Any]]:
        with reaching_redis():
            raw = self.redis.hgetall(self.keys.destinations_disabled)
        return {str(name): json.loads(value) for name, value in raw.items()}

    def enable(self, handler: str) -> bool:
        with reaching_redis():
            return bool(self.redis.hdel(self.keys.destinations_disabled, handler))


# -- the handler -------------------------------------------------------------------------------


def destination_handler(spec: DestinationSpec, settings: Settings) -> Handler:
    """The handler that POSTs each event it is given to ``spec``'s URL."""
    name = spec.handler
    render = RENDERERS[spec.format]
    signing = settings.destination_secret(spec.secret) if spec.secret else None
    state: list[DisabledDestinations] = []
    lock = threading.Lock()

    def disabled() -> DisabledDestinations:
        with lock:
            if not state:
                from eda.redis_server import connect

                state.append(DisabledDestinations(connect(settings), Keys(settings.prefix)))
            return state[0]

    from eda.handlers import Skip  # handlers read routes, which read this module

    def handle(event: Event) -> dict[str, Any]:
        why = disabled().why(name)
        if why is not None:
            raise Skip(
                f"{name} is disabled since {why['at']} ({why['reason']}); "
                f"enable it with: eda destinations enable {name}",
                stage="destination",
            )
        url = spec.url or settings.destination_secret(spec.url_secret or "")
        if url is None:
            raise Skip(f"{name} is not configured: {spec.url_secret} is unset", stage="destination")
        host = urlsplit(url).hostname or ""
        refusal = refused_host(host, settings.destination_allowed_networks, spec.internal)
        if refusal is not None:
            raise PermanentError(f"{name}: {refusal.replace(host, '<its host>')}")
        body, content_type = render(event)
        message_id = event.delivery.idempotency_key if event.delivery else event.id
        headers = {**spec.headers, "Content-Type": content_type, "User-Agent": "eda"}
        headers |= {"webhook-id": message_id, "webhook-timestamp": str(int(time.time()))}
        if signing is not None:
            stamp = int(headers["webhook-timestamp"])
            headers["webhook-signature"] = sign(signing, message_id, stamp, body)
        answer = post(url, body, headers, spec.timeout)
        return judge(name, answer, disabled)

    handle.__name__ = handle.__qualname__ = name
    return handle


def judge(
    name: str, answer: Response, disabled: Callable[[], DisabledDestinations]
) -> dict[str, Any]:
    """The delivery's outcome from the destination's answer, or the error that ends it."""
    outcome = {"destination": name, "status": answer.status}
    if 200 <= answer.status < 300:
        return outcome
    excerpt = " ".join(answer.body.split())[:BODY_EXCERPT]
    said = f"HTTP {answer.status} from {name}" + (f": {excerpt}" if excerpt else "")
    if answer.status in RETRIED or answer.status >= 500:
        raise TransientError(said, retry_after=answer.retry_after)
    if answer.status == 410:
        disabled().disable(name, 410, "410 Gone")
        raise PermanentError(f"{said} (the destination is disabled until enabled again)")
    if 300 <= answer.status < 400:
        raise PermanentError(f"{said} (a redirect: destinations do not follow them)")
    raise PermanentError(said)


def register_destinations(
    register: Callable[[str, Handler], Any], routes: Iterable[Any], settings: Settings
) -> list[str]:
    """Register a handler for each destination the routes declare; their handler names.

    Two routes may share a destination by its name, declared the same way in both.
    """
    seen: dict[str, DestinationSpec] = {}
    for route in routes:
        spec: DestinationSpec | None = route.destination
        if spec is None:
            continue
        if spec.handler in seen:
            if seen[spec.handler] != spec:
                raise InvalidInput(
                    f"{route.origin}: destination",
                    f"{spec.handler} is declared twice, differently: give each its own name",
                )
            continue
        seen[spec.handler] = spec
        register(spec.handler, destination_handler(spec, settings))
    return list(seen)
