"""eda.times: the spellings of a point in time that every face accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eda.errors import InvalidInput
from eda.times import parse_time

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T09:30:00Z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("2026-01-31t09:30:00z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("2026-01-31T09:30:00.250Z", datetime(2026, 1, 31, 9, 30, 0, 250_000, tzinfo=UTC)),
        ("2026-01-31T11:30:00+02:00", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("2026-01-31T04:30:00-05:00", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("2026-01-31 09:30:00Z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("  2026-01-31T09:30:00Z  ", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
    ],
)
def test_absolute_times_are_read_as_utc(text: str, expected: datetime) -> None:
    parsed = parse_time(text, field="since")
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_a_time_without_an_offset_is_utc() -> None:
    parsed = parse_time("2026-01-31T09:30:00", field="since")
    assert parsed == datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("0s", timedelta(0)),
        ("90M", timedelta(minutes=90)),
        ("3 h", timedelta(hours=3)),
    ],
)
def test_durations_mean_that_long_before_now(text: str, ago: timedelta) -> None:
    assert parse_time(text, field="since", now=NOW) == NOW - ago


def test_durations_count_back_from_the_current_time_by_default() -> None:
    before = datetime.now(UTC)
    parsed = parse_time("1h", field="since")
    after = datetime.now(UTC)
    assert before - timedelta(hours=1) <= parsed <= after - timedelta(hours=1)
    assert parsed.tzinfo is not None


def test_a_naive_now_is_taken_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_time("1d", field="since", now=naive) == NOW - timedelta(days=1)


@pytest.mark.parametrize(
    ("text", "in_reason"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("yesterday", "is not a time"),
        ("15 minutes", "is not a time"),
        ("-15m", "is not a time"),
        ("1.5h", "is not a time"),
        ("15y", "is not a time"),
        ("2026-13-01", "is not a time"),
        ("2026-01-31T25:00:00Z", "is not a time"),
        ("1738315800", "is not a time"),
        ("x" * 65, "too long"),
        ("99999999w", "before the year 1"),
        ("0001-01-01T00:00:00+01:00", "out of the range"),
    ],
)
def test_anything_else_is_invalid_input_naming_the_field(text: str, in_reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_time(text, field="until", now=NOW)
    assert caught.value.field == "until"
    assert in_reason in caught.value.reason


def test_the_error_shows_what_would_be_accepted() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_time("last tuesday", field="since")
    assert "'last tuesday'" in caught.value.reason
    assert "RFC 3339" in caught.value.reason
    assert "15m" in caught.value.reason
