"""Points in time as people type them: RFC 3339 / ISO 8601, or a duration ago.

Every face (the Gantz scripts, the CLI, the admin HTTP API) reads ``since`` and
``until`` through :func:`parse_time`, so they all accept the same spellings.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from eda.errors import InvalidInput

#: Seconds in one unit of a relative duration.
UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
#: A relative duration: a whole number and one unit, meaning "that long ago".
RELATIVE = re.compile(r"^(\d{1,9})\s*([smhdw])$")
#: Longest text worth parsing; anything longer is a mistake, not a time.
MAX_LENGTH = 64
#: What the error message offers as examples of accepted input.
EXAMPLES = "an RFC 3339 time such as '2026-01-31T09:30:00Z' or a duration ago such as '15m'"


def now_iso() -> str:
    """The current time as RFC 3339 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: A position in the event stream, ``<milliseconds>-<sequence>``, as a replay reports it.
STREAM_POSITION = re.compile(r"^\d{1,15}-\d{1,15}$")


def parse_bound(text: str, *, field: str) -> datetime | str:
    """A ``since``/``until`` bound: a time (as :func:`parse_time`) or an exact stream position.

    A replay that its limit cut says where to go on as a stream position
    (``1764687600000-3``): unlike a time, it names one event exactly.
    """
    if STREAM_POSITION.fullmatch(text.strip()):
        return text.strip()
    return parse_time(text, field=field)


def parse_time(text: str, *, field: str, now: datetime | None = None) -> datetime:
    """Read an absolute time or a duration ago as an aware UTC datetime.

    Accepts ISO 8601 / RFC 3339 (``Z`` or an offset; a time without one is UTC;
    a bare date is its midnight UTC) and ``<n>s|m|h|d|w`` meaning that long
    before ``now`` (default: the current time). Raises InvalidInput(field, reason).
    """
    value = text.strip() if isinstance(text, str) else ""
    if not value:
        raise InvalidInput(field, f"is empty; give {EXAMPLES}")
    if len(value) > MAX_LENGTH:
        raise InvalidInput(field, f"is {len(value)} characters, too long for a time")
    relative = RELATIVE.match(value.lower())
    if relative:
        return _ago(int(relative.group(1)), relative.group(2), field, now)
    return _absolute(value, field)


def _ago(amount: int, unit: str, field: str, now: datetime | None) -> datetime:
    reference = now if now is not None else datetime.now(UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    try:
        return (reference - timedelta(seconds=amount * UNITS[unit])).astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, f"'{amount}{unit}' ago is before the year 1") from None


def _absolute(value: str, field: str) -> datetime:
    # fromisoformat takes 'Z' since 3.11; a lower-case 't' or 'z' is valid RFC 3339 too.
    normalized = value[:10] + value[10:].upper() if len(value) > 10 else value
    try:
        parsed = datetime.fromisoformat(normalized)
    except ValueError:
        raise InvalidInput(field, f"{value!r} is not a time; give {EXAMPLES}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, f"{value!r} is out of the range of times") from None
