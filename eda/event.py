"""The event: one envelope everywhere, convertible to and from CloudEvents 1.0."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from eda.errors import InvalidInput

#: Event types are dotted lower-case words; they become routing keys and key parts.
TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
#: Longest accepted event type.
MAX_TYPE_LENGTH = 128
#: Longest accepted source, subject, correlation or dedupe key.
MAX_FIELD_LENGTH = 256
#: CloudEvents extension attributes (lower-case alphanumerics) for our optional fields.
EXTENSIONS = {
    "correlation_id": "correlationid",
    "causation_id": "causationid",
    "dedupe_key": "dedupekey",
}
#: Attributes an event has fields for, and ours, never kept among a sender's ``attributes``.
ENVELOPE_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "time", "subject", "data", "data_base64", "edaid"}
    | set(EXTENSIONS.values())
)
#: A CloudEvents attribute name: lower-case letters and digits (the spec's advice: at most 20).
ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,20}$")
#: Most attributes a sender may add, and the longest text value of one.
MAX_ATTRIBUTES, MAX_ATTRIBUTE_LENGTH = 64, 4096
#: Deepest nesting accepted in a payload (pydantic's JSON serializer gives up past 255).
MAX_PAYLOAD_DEPTH = 128
#: Validation context of an event read back from the store.
STORED = {"stored": True}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: What tells a JSON value (no NaN or Infinity), built once: ``json.dumps`` with arguments
#: builds an encoder at every call.
_STRICT_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False)
#: Half of a UTF-16 surrogate pair: JSON's ``"\\ud800"`` parses to one, and it is not text.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: What is said of a lone surrogate, wherever it is found.
SURROGATE_REASON = "holds a lone UTF-16 surrogate (such as \\ud800), which is not Unicode text"


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """True when lists/objects nest more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item)
    return False


def _bounded_text(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip():
        raise ValueError("must not be empty")
    if len(value) > MAX_FIELD_LENGTH:
        raise ValueError(f"is {len(value)} characters, at most {MAX_FIELD_LENGTH} allowed")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if _SURROGATE.search(value):
        raise ValueError(SURROGATE_REASON)
    return value


@dataclass(frozen=True)
class DeliveryInfo:
    """Which delivery handed an event to a handler: its id, run and attempt."""

    #: ``<event id>:<handler>``: stable over every attempt and run of the delivery.
    id: str
    handler: str
    #: The run (1 for the first dispatch; each replay or retry from the DLQ adds one).
    run: int
    #: The attempt within the run (1 for the first try; retries add one).
    attempt: int
    task_id: str
    #: Times this attempt started: more than 1 when its worker died and it restarts in place.
    starts: int = 1

    @property
    def first_start(self) -> bool:
        """True on the first start of the run's first attempt: nothing of the run ran before."""
        return self.attempt == 1 and self.starts == 1

    @property
    def idempotency_key(self) -> str:
        """What a handler's side effects are keyed by, so a repeated attempt does them once."""
        return self.id


class Event(BaseModel):
    """A thing that happened, as stored, routed and handed to handlers.

    ``payload`` is any JSON value (an object in practice). ``dedupe_key`` is the
    sender's own delivery id, kept apart from ``id`` which is ours. A handler's
    event carries :attr:`delivery` (never stored): at-least-once delivery means a
    handler may see the same delivery twice, and its id is the idempotency key.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    _delivery: DeliveryInfo | None = PrivateAttr(default=None)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=64)
    type: str
    source: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    #: Kept out of repr (and so out of any exception text or log line that shows an event).
    payload: Any = Field(default=None, repr=False)
    subject: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    dedupe_key: str | None = None
    #: The sender's own id of this event (a CloudEvent's ``id``), kept apart from ours.
    origin_id: str | None = None
    #: CloudEvents attributes the sender set that the envelope has no field for, verbatim:
    #: ``datacontenttype``, ``dataschema``, ``traceparent``, ``tracestate``, extensions.
    attributes: dict[str, str | int | bool] | None = None
    #: ``base64`` when the payload is binary data as base64 text (``data_base64``).
    payload_encoding: Literal["base64"] | None = None

    @field_validator("attributes")
    @classmethod
    def _check_attributes(
        cls, value: dict[str, str | int | bool] | None
    ) -> dict[str, str | int | bool] | None:
        if value is None:
            return None
        if len(value) > MAX_ATTRIBUTES:
            raise ValueError(f"has {len(value)} entries, at most {MAX_ATTRIBUTES} allowed")
        for name, item in value.items():
            if not ATTRIBUTE_NAME.match(name) or name in ENVELOPE_ATTRIBUTES:
                raise ValueError(
                    f"{name[:40]!r} is not an extension attribute name (a-z, 0-9, at most 20)"
                )
            if isinstance(item, str) and (
                len(item) > MAX_ATTRIBUTE_LENGTH or _SURROGATE.search(item)
            ):
                raise ValueError(
                    f"{name}: is not text of at most {MAX_ATTRIBUTE_LENGTH} characters"
                )
        return value or None

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        if len(value) > MAX_TYPE_LENGTH:
            raise ValueError(f"is {len(value)} characters, at most {MAX_TYPE_LENGTH} allowed")
        if not TYPE_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} is not dotted lower-case words such as 'alert.triggered'")
        return value

    @field_validator(
        "id", "source", "subject", "correlation_id", "causation_id", "dedupe_key", "origin_id"
    )
    @classmethod
    def _check_text(cls, value: str | None, info: Any) -> str | None:
        return _bounded_text(info.field_name, value)

    @field_validator("time")
    @classmethod
    def _check_time(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone (RFC 3339)")
        return value.astimezone(UTC)

    @field_validator("payload")
    @classmethod
    def _check_payload(cls, value: Any, info: ValidationInfo) -> Any:
        if info.context == STORED:  # checked when it was stored: JSON by construction
            return value
        if _nested_deeper_than(value, MAX_PAYLOAD_DEPTH):
            raise ValueError(f"is nested more than {MAX_PAYLOAD_DEPTH} levels deep")
        try:
            text = _STRICT_JSON.encode(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"is not a JSON value ({exc})") from None
        # Stored as UTF-8, which cannot hold one (ASCII text, the most of it, holds none).
        if not text.isascii() and _SURROGATE.search(text):
            raise ValueError(SURROGATE_REASON)
        return value

    @property
    def delivery(self) -> DeliveryInfo | None:
        """The delivery that handed this event to its handler (None outside a delivery)."""
        return self._delivery

    def delivered(self, info: DeliveryInfo) -> Event:
        """This event as handed to a handler by the delivery ``info``."""
        copy = self.model_copy()
        copy._delivery = info
        return copy

    @classmethod
    def create(cls, **fields: Any) -> Event:
        """Build an event, turning a validation failure into InvalidInput(field, reason)."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise _invalid(exc) from None

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Parse the stored JSON form (our own field names).

        The payload, parsed from JSON, is not walked again for depth and JSON-ness:
        every stored event passed those checks when it was stored.
        """
        try:
            return cls.model_validate_json(text, context=STORED)
        except ValidationError as exc:
            raise _invalid(exc) from None

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @property
    def timestamp(self) -> str:
        """The time as RFC 3339 in UTC, with a ``Z``."""
        return self.time.isoformat().replace("+00:00", "Z")

    def to_cloudevent(self) -> dict[str, Any]:
        """This event as a CloudEvents 1.0 structured-mode JSON object.

        An event received as a CloudEvent gives back what came in: the sender's ``id``
        (ours is the ``edaid`` extension), its attributes and extensions, and binary data
        as ``data_base64``.
        """
        cloudevent: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.origin_id or self.id,
            "source": self.source,
            "type": self.type,
            "time": self.timestamp,
        }
        if self.origin_id is not None:
            cloudevent["edaid"] = self.id
        # Without datacontenttype, data in the JSON format is JSON: our own events say nothing.
        cloudevent.update(self.attributes or {})
        if self.payload_encoding == "base64":
            cloudevent["data_base64"] = self.payload
        else:
            cloudevent["data"] = self.payload
        if self.subject is not None:
            cloudevent["subject"] = self.subject
        for field, attribute in EXTENSIONS.items():
            value = getattr(self, field)
            if value is not None:
                cloudevent[attribute] = value
        return cloudevent

    @classmethod
    def from_cloudevent(
        cls, cloudevent: dict[str, Any], *, keep_id: bool = True, dedupe_key: str | None = None
    ) -> Event:
        """Read a CloudEvents 1.0 structured-mode object; InvalidInput says what is wrong.

        ``keep_id``: the event's id is the CloudEvent's (``edaid`` when there is one);
        otherwise a new id is made, the CloudEvent's ``id`` is kept as ``origin_id`` and
        ``dedupe_key`` is the one given. Every other attribute is kept in ``attributes``.
        """
        if not isinstance(cloudevent, dict):
            raise InvalidInput("cloudevent", "must be a JSON object")
        if cloudevent.get("specversion") != "1.0":
            raise InvalidInput("specversion", "must be '1.0'")
        for required in ("id", "source", "type"):
            if not isinstance(cloudevent.get(required), str):
                raise InvalidInput(required, "is required by CloudEvents and must be a string")
        fields: dict[str, Any] = {
            "type": cloudevent["type"],
            "source": cloudevent["source"],
            "payload": cloudevent.get("data"),
            "subject": cloudevent.get("subject"),
            "time": cloudevent.get("time"),
            "attributes": {k: v for k, v in cloudevent.items() if k not in ENVELOPE_ATTRIBUTES}
            or None,
        }
        if "data_base64" in cloudevent:
            fields["payload"] = _base64_text(cloudevent["data_base64"])
            fields["payload_encoding"] = "base64"
        if not keep_id:
            fields["origin_id"], fields["dedupe_key"] = cloudevent["id"], dedupe_key
        elif isinstance(cloudevent.get("edaid"), str):
            fields["id"], fields["origin_id"] = cloudevent["edaid"], cloudevent["id"]
        else:
            fields["id"] = cloudevent["id"]
        for field, attribute in EXTENSIONS.items():
            if attribute in cloudevent and not (field == "dedupe_key" and not keep_id):
                fields[field] = cloudevent[attribute]
        return cls.create(**{k: v for k, v in fields.items() if v is not None or k == "payload"})


def _base64_text(value: Any) -> str:
    """CloudEvents' ``data_base64``, checked to be base64; InvalidInput when it is not."""
    try:
        if isinstance(value, str):
            base64.b64decode(value, validate=True)
            return value
    except (binascii.Error, ValueError):
        pass
    raise InvalidInput("data_base64", "must be base64 text")


def _invalid(exc: ValidationError) -> InvalidInput:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "event"
    message = str(error["msg"]).removeprefix("Value error, ")
    return InvalidInput(field, message)
