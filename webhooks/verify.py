"""Signature schemes, each exactly as its sender specifies it.

Every verifier takes the raw body, the request headers (lower-case names), the
secret as configured and the allowed clock skew, and returns nothing or raises
:class:`SignatureRejected`. Signatures are compared with
:func:`hmac.compare_digest`; neither secrets nor signatures ever appear in a
rejection's reason, which is sent back to the caller and logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Protocol


class Headers(Protocol):
    """A request's headers as read here: ``get`` by lower-case name (a request's are
    :class:`RequestHeaders`, case-insensitive; a dict's keys are lower-case names)."""

    def get(self, key: str, default: str, /) -> str: ...


class RequestHeaders:
    """A request's headers read by name, case-insensitive, straight from the WSGI environ.

    What werkzeug's ``request.headers`` does per look-up (upper-case the name, raise and
    catch a ``BadRequestKeyError`` for each header not sent: a verifier asks for Svix's
    names first), done once per name.
    """

    __slots__ = ("environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ

    def get(self, name: str, default: str = "", /) -> str:
        key = _ENVIRON_KEYS.get(name)
        if key is None:
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = f"HTTP_{key}"
            if len(_ENVIRON_KEYS) < MAX_NAMES_KEPT:
                _ENVIRON_KEYS[name] = key
        value = self.environ.get(key)
        return default if value is None else str(value)


#: Header names to their WSGI environ keys, as looked up (bounded: names come from code).
_ENVIRON_KEYS: dict[str, str] = {}
MAX_NAMES_KEPT = 256


#: A verifier: (body, headers, secret, tolerance in seconds) -> None, or SignatureRejected.
Verifier = Callable[[bytes, Headers, str, float], None]
#: The prefix of Stripe's and Standard Webhooks' secrets.
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
#: Longest signature header worth reading; anything longer is not a signature.
MAX_HEADER_LENGTH = 4096
#: A Unix timestamp as senders write it: ASCII digits only (``str.isdigit`` takes ``²``).
UNIX_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureRejected(Exception):
    """The request is not signed by the holder of the secret (HTTP 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SecretMisconfigured(Exception):
    """The configured secret cannot be used by its scheme (an operator's mistake)."""


def _header(headers: Headers, name: str) -> str:
    return _present(name, headers.get(name, "").strip())


def _present(name: str, value: str) -> str:
    """A signature header's value (stripped); SignatureRejected when empty or too long."""
    if not value:
        raise SignatureRejected(f"the {name} header is missing")
    if len(value) > MAX_HEADER_LENGTH:
        raise SignatureRejected(f"the {name} header is too long")
    return value


def _timestamp(text: str, tolerance: float, name: str) -> int:
    """A Unix timestamp within ``tolerance`` seconds of now, either way."""
    if not UNIX_TIMESTAMP.fullmatch(text):
        raise SignatureRejected(f"the {name} is not a Unix timestamp")
    stamp = int(text)
    if abs(time.time() - stamp) > tolerance:
        raise SignatureRejected(f"the {name} is outside the {tolerance:g} s window")
    return stamp


def _hex_hmac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _any_matches(expected: bytes, offered: list[bytes]) -> bool:
    # Check every candidate so that the time taken does not say which one matched.
    found = False
    for candidate in offered:
        found |= hmac.compare_digest(expected, candidate)
    return found


def github(body: bytes, headers: Headers, secret: str, tolerance: float) -> None:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``; GitHub sends no timestamp."""
    signature = _header(headers, "x-hub-signature-256")
    scheme, _, digest = signature.partition("=")
    if scheme != "sha256" or not digest:
        raise SignatureRejected("the x-hub-signature-256 header is not 'sha256=<hex>'")
    expected = _hex_hmac(secret.encode(), body)
    if not hmac.compare_digest(expected.encode(), digest.lower().encode()):
        raise SignatureRejected("the signature does not match the body")


def stripe(body: bytes, headers: Headers, secret: str, tolerance: float) -> None:
    """``Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`` over ``"{t}.{body}"``, the secret as bytes."""
    pairs = [item.partition("=") for item in _header(headers, "stripe-signature").split(",")]
    stamps = [value for key, _, value in pairs if key.strip() == "t"]
    offered = [value.strip().lower().encode() for key, _, value in pairs if key.strip() == "v1"]
    if len(stamps) != 1 or not offered:
        raise SignatureRejected("the stripe-signature header lacks t= or v1=")
    stamp = _timestamp(stamps[0].strip(), tolerance, "stripe-signature timestamp")
    expected = _hex_hmac(secret.encode(), f"{stamp}.".encode() + body)
    if not _any_matches(expected.encode(), offered):
        raise SignatureRejected("no v1 signature matches the body")


def slack(body: bytes, headers: Headers, secret: str, tolerance: float) -> None:
    """``X-Slack-Signature: v0=<hex>`` over ``"v0:{X-Slack-Request-Timestamp}:{body}"``."""
    signature = _header(headers, "x-slack-signature")
    stamp = _timestamp(
        _header(headers, "x-slack-request-timestamp"), tolerance, "x-slack-request-timestamp"
    )
    expected = "v0=" + _hex_hmac(secret.encode(), f"v0:{stamp}:".encode() + body)
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise SignatureRejected("the signature does not match the body")


@lru_cache(maxsize=64)
def standard_secret(secret: str) -> bytes:
    """The key of a Standard Webhooks secret: base64 after an optional ``whsec_``.

    Decoded once a secret (a deployment has a few), not once a request.
    """
    text = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretMisconfigured("the secret is not base64 (whsec_<base64>)") from None
    if not key:
        raise SecretMisconfigured("the secret is empty")
    return key


#: The header names of each Standard Webhooks field: (Svix's, the standard's).
_STANDARD_NAMES = {
    field: (f"svix-{field}", f"webhook-{field}") for field in ("id", "timestamp", "signature")
}


def standard_header(headers: Headers, field: str) -> tuple[str, str]:
    """(name, value) of a Standard Webhooks header, ``svix-<field>`` before ``webhook-<field>``.

    Senders built on Svix (Clerk, Resend) send the same scheme under ``svix-*`` names;
    Svix's own verifier reads those first, and so do we. Missing: ``webhook-<field>``, "".
    """
    svix, standard = _STANDARD_NAMES.get(field) or (f"svix-{field}", f"webhook-{field}")
    for name in (svix, standard):
        value = headers.get(name, "").strip()
        if value:
            return name, value
    return standard, ""


def message_id(headers: Headers) -> str | None:
    """The signed message id of a Standard Webhooks request (``svix-id`` or ``webhook-id``)."""
    return standard_header(headers, "id")[1] or None


def standard(body: bytes, headers: Headers, secret: str, tolerance: float) -> None:
    """Standard Webhooks: ``webhook-signature: v1,<base64> …`` over ``"{id}.{stamp}.{body}"``.

    The ``svix-id``, ``svix-timestamp`` and ``svix-signature`` headers are read as well.
    """
    message = _present(*standard_header(headers, "id"))
    stamp_name, stamp_text = standard_header(headers, "timestamp")
    stamp = _timestamp(_present(stamp_name, stamp_text), tolerance, stamp_name)
    offered: list[bytes] = []
    for item in _present(*standard_header(headers, "signature")).split():
        version, _, encoded = item.partition(",")
        if version != "v1":
            continue
        try:
            offered.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    key = standard_secret(secret)
    expected = hmac.new(key, f"{message}.{stamp}.".encode() + body, hashlib.sha256).digest()
    if not _any_matches(expected, offered):
        raise SignatureRejected("no v1 signature matches the body")


def offered_token(headers: Headers) -> str | None:
    """The token a request offers: ``Authorization: Bearer <token>`` or ``X-Api-Key``."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def token_holder(offered: str, tokens: Mapping[str, str]) -> str:
    """The name whose token ``offered`` is; SignatureRejected when it is nobody's.

    Every token is compared (in constant time), so the time taken does not say which
    name, if any, came close.
    """
    holder = None
    for name, token in sorted(tokens.items()):
        if hmac.compare_digest(offered.encode(), token.encode()):
            holder = name
    if holder is None:
        raise SignatureRejected("the token is not one of a configured sender")
    return holder


def signed(headers: Headers) -> bool:
    """True when a request carries a Standard Webhooks (or Svix) signature header."""
    return bool(standard_header(headers, "signature")[1])
