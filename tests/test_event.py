"""eda.event: the envelope's rules, and CloudEvents 1.0 in and out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from eda.errors import InvalidInput
from eda.event import MAX_FIELD_LENGTH, MAX_TYPE_LENGTH, Event


def invalid(**fields: Any) -> InvalidInput:
    """The InvalidInput that creating an event from these fields raises."""
    fields = {"type": "alert.triggered", "source": "tests", **fields}
    with pytest.raises(InvalidInput) as caught:
        Event.create(**fields)
    return caught.value


def full_event() -> Event:
    return Event.create(
        type="code.pr_opened",
        source="github",
        time=datetime(2026, 2, 3, 4, 5, 6, 789_012, tzinfo=UTC),
        payload={"pr": 42, "title": "Fix ü", "labels": ["a", "b"], "draft": False, "n": None},
        subject="repo/widgets#42",
        correlation_id="corr-1",
        causation_id="cause-1",
        dedupe_key="delivery-7",
    )


# -- type ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_type", ["alert.triggered", "code.pr_opened", "a.b.c", "x1.y_2", "customer.churn_risk"]
)
def test_dotted_lower_case_types_are_accepted(event_type: str) -> None:
    assert Event.create(type=event_type, source="tests").type == event_type


@pytest.mark.parametrize(
    "event_type",
    [
        "alert",
        "Alert.triggered",
        "alert.Triggered",
        "alert..x",
        ".alert",
        "alert.",
        "1alert.x",
        "alert triggered.x",
        "alert.trig-gered",
        "alert.*",
        "alert:x.y",
        "alert.x\n",
        "",
    ],
)
def test_types_that_are_not_dotted_lower_case_words_are_refused(event_type: str) -> None:
    error = invalid(type=event_type)
    assert error.field == "type"
    assert error.reason == (
        f"{event_type!r} is not dotted lower-case words such as 'alert.triggered'"
    )


def test_a_type_longer_than_the_limit_is_refused_with_its_length() -> None:
    longest = "a." + "b" * (MAX_TYPE_LENGTH - 2)
    assert Event.create(type=longest, source="tests").type == longest
    error = invalid(type=longest + "c")
    assert (error.field, error.reason) == (
        "type",
        f"is {MAX_TYPE_LENGTH + 1} characters, at most {MAX_TYPE_LENGTH} allowed",
    )


def test_a_type_is_required_and_must_be_text() -> None:
    with pytest.raises(InvalidInput) as caught:
        Event.create(source="tests")
    assert (caught.value.field, caught.value.reason) == ("type", "Field required")
    assert invalid(type=5).field == "type"


# -- source and the other bounded texts ---------------------------------------------------------


@pytest.mark.parametrize("field", ["source", "subject", "correlation_id", "causation_id"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * (MAX_FIELD_LENGTH + 1), f"is 257 characters, at most {MAX_FIELD_LENGTH} allowed"),
        ("line\nbreak", "must not contain control characters"),
        ("nul\x00", "must not contain control characters"),
        ("del\x7f", "must not contain control characters"),
    ],
)
def test_bounded_text_fields_refuse_empty_long_and_control_characters(
    field: str, value: str, reason: str
) -> None:
    error = invalid(**{field: value})
    assert (error.field, error.reason) == (field, reason)


@pytest.mark.parametrize("field", ["source", "subject", "correlation_id", "causation_id"])
def test_bounded_text_fields_accept_up_to_the_limit(field: str) -> None:
    value = "ü" * MAX_FIELD_LENGTH
    assert getattr(Event.create(**{"type": "a.b", "source": "s", field: value}), field) == value


def test_optional_fields_default_to_none_and_a_source_is_required() -> None:
    event = Event.create(type="a.b", source="s")
    assert (event.subject, event.correlation_id, event.causation_id, event.dedupe_key) == (
        None,
        None,
        None,
        None,
    )
    with pytest.raises(InvalidInput) as caught:
        Event.create(type="a.b")
    assert caught.value.field == "source"


def test_ids_are_generated_unique_and_checked_when_given() -> None:
    assert len({Event.create(type="a.b", source="s").id for _ in range(100)}) == 100
    assert invalid(id="").field == "id"
    assert invalid(id="x" * 65).reason == "String should have at most 64 characters"
    assert invalid(id="a\nb").reason == "must not contain control characters"


def test_unknown_fields_are_refused_by_name() -> None:
    error = invalid(colour="red")
    assert (error.field, error.reason) == ("colour", "Extra inputs are not permitted")


# -- payload ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [{"a": 1}, [1, "two", None], "text", 3, 2.5, True, None, {"nested": {"deep": [{}]}}],
)
def test_any_json_value_is_a_payload(payload: Any) -> None:
    assert Event.create(type="a.b", source="s", payload=payload).payload == payload


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (float("nan"), "Out of range float values are not JSON compliant"),
        ({"x": float("inf")}, "Out of range float values are not JSON compliant"),
        ({1, 2}, "Object of type set is not JSON serializable"),
        (b"bytes", "Object of type bytes is not JSON serializable"),
        ({"when": datetime(2026, 1, 1)}, "Object of type datetime is not JSON serializable"),
    ],
)
def test_a_payload_that_is_not_json_is_refused(payload: Any, detail: str) -> None:
    error = invalid(payload=payload)
    assert (error.field, error.reason) == ("payload", f"is not a JSON value ({detail})")


# -- time ------------------------------------------------------------------------------------


def test_a_naive_time_is_refused() -> None:
    error = invalid(time=datetime(2026, 1, 1, 12, 0))
    assert (error.field, error.reason) == ("time", "must carry a time zone (RFC 3339)")
    error = invalid(time="2026-01-01T12:00:00")
    assert (error.field, error.reason) == ("time", "must carry a time zone (RFC 3339)")


def test_times_are_kept_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    event = Event.create(type="a.b", source="s", time=datetime(2026, 1, 1, 13, 0, tzinfo=paris))
    assert event.time == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert event.time.utcoffset() == timedelta(0)
    assert event.timestamp == "2026-01-01T12:00:00Z"


def test_a_time_that_does_not_parse_is_refused() -> None:
    assert invalid(time="last tuesday").field == "time"


def test_the_default_time_is_now_in_utc() -> None:
    before = datetime.now(UTC)
    event = Event.create(type="a.b", source="s")
    assert before <= event.time <= datetime.now(UTC)
    assert event.timestamp.endswith("Z")


# -- stored JSON -----------------------------------------------------------------------------


def test_the_stored_json_round_trips_and_leaves_out_absent_fields() -> None:
    event = full_event()
    assert Event.from_json(event.to_json()) == event
    bare = Event.create(type="a.b", source="s")
    assert "subject" not in json.loads(bare.to_json())
    assert Event.from_json(bare.to_json()) == bare


def test_stored_json_that_breaks_a_rule_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        Event.from_json('{"type": "Bad", "source": "s"}')
    assert caught.value.field == "type"


# -- CloudEvents -----------------------------------------------------------------------------


def test_an_event_becomes_a_structured_cloudevent() -> None:
    event = full_event()
    cloudevent = event.to_cloudevent()
    assert cloudevent == {
        "specversion": "1.0",
        "id": event.id,
        "source": "github",
        "type": "code.pr_opened",
        "time": "2026-02-03T04:05:06.789012Z",
        "data": {"pr": 42, "title": "Fix ü", "labels": ["a", "b"], "draft": False, "n": None},
        "subject": "repo/widgets#42",
        "correlationid": "corr-1",
        "causationid": "cause-1",
        "dedupekey": "delivery-7",
    }
    # Extension attribute names are lower-case alphanumerics, as CloudEvents 1.0 requires.
    assert all(name.isalnum() and name.islower() for name in cloudevent)


def test_a_cloudevent_round_trip_through_json_loses_nothing() -> None:
    event = full_event()
    wire = json.dumps(event.to_cloudevent())
    assert Event.from_cloudevent(json.loads(wire)) == event


def test_a_minimal_cloudevent_round_trips() -> None:
    event = Event.create(type="a.b", source="s")
    cloudevent = event.to_cloudevent()
    assert not {"subject", "correlationid", "causationid", "dedupekey"} & set(cloudevent)
    assert Event.from_cloudevent(json.loads(json.dumps(cloudevent))) == event


def test_ingesting_without_keeping_the_id_keeps_it_as_the_origin_id() -> None:
    event = full_event()
    ingested = Event.from_cloudevent(event.to_cloudevent(), keep_id=False, dedupe_key="k")
    assert ingested.id != event.id
    assert (ingested.origin_id, ingested.dedupe_key) == (event.id, "k")
    assert ingested.model_dump(exclude={"id", "dedupe_key", "origin_id"}) == event.model_dump(
        exclude={"id", "dedupe_key", "origin_id"}
    )
    # And it gives back what came in, our id beside it as the edaid extension.
    back = ingested.to_cloudevent()
    assert (back["id"], back["edaid"]) == (event.id, ingested.id)
    assert Event.from_cloudevent(json.loads(json.dumps(back))) == ingested


def test_every_attribute_and_binary_data_survive_a_cloudevent_round_trip() -> None:
    sent = {
        "specversion": "1.0",
        "id": "sender-1",
        "source": "/sensors/7",
        "type": "file.uploaded",
        "time": "2026-02-03T04:05:06Z",
        "datacontenttype": "application/pdf",
        "dataschema": "https://example.com/schema",
        "traceparent": "00-abc-def-01",
        "tracestate": "k=v",
        "region": "eu",
        "priority": 3,
        "sampled": True,
        "data_base64": "JVBERi0xLjQK",
    }
    event = Event.from_cloudevent(sent, keep_id=False, dedupe_key="events:ce:x")
    assert (event.payload, event.payload_encoding) == ("JVBERi0xLjQK", "base64")
    back = event.to_cloudevent()
    assert {k: v for k, v in back.items() if k not in ("edaid", "dedupekey")} == sent
    assert Event.from_json(event.to_json()) == event


def test_a_cloudevent_without_time_gets_the_current_time() -> None:
    before = datetime.now(UTC)
    event = Event.from_cloudevent({"specversion": "1.0", "id": "x", "source": "s", "type": "a.b"})
    assert event.time >= before
    assert event.payload is None


def cloudevent_error(cloudevent: Any) -> tuple[str, str]:
    with pytest.raises(InvalidInput) as caught:
        Event.from_cloudevent(cloudevent)
    return caught.value.field, caught.value.reason


BASE = {"specversion": "1.0", "id": "e-1", "source": "s", "type": "a.b"}


@pytest.mark.parametrize(
    ("cloudevent", "expected"),
    [
        ([], ("cloudevent", "must be a JSON object")),
        ("text", ("cloudevent", "must be a JSON object")),
        ({**BASE, "specversion": "0.3"}, ("specversion", "must be '1.0'")),
        ({k: v for k, v in BASE.items() if k != "specversion"}, ("specversion", "must be '1.0'")),
        (
            {k: v for k, v in BASE.items() if k != "id"},
            ("id", "is required by CloudEvents and must be a string"),
        ),
        ({**BASE, "id": 7}, ("id", "is required by CloudEvents and must be a string")),
        (
            {k: v for k, v in BASE.items() if k != "source"},
            ("source", "is required by CloudEvents and must be a string"),
        ),
        (
            {k: v for k, v in BASE.items() if k != "type"},
            ("type", "is required by CloudEvents and must be a string"),
        ),
        (
            {**BASE, "data_base64": "not base64!"},
            ("data_base64", "must be base64 text"),
        ),
        ({**BASE, "time": "2026-01-01T00:00:00"}, ("time", "must carry a time zone (RFC 3339)")),
        (
            {**BASE, "type": "NotDotted"},
            ("type", "'NotDotted' is not dotted lower-case words such as 'alert.triggered'"),
        ),
        ({**BASE, "subject": ""}, ("subject", "must not be empty")),
        (
            {**BASE, "correlationid": "x" * 300},
            ("correlation_id", "is 300 characters, at most 256 allowed"),
        ),
    ],
)
def test_a_malformed_cloudevent_is_invalid_input_naming_the_attribute(
    cloudevent: Any, expected: tuple[str, str]
) -> None:
    assert cloudevent_error(cloudevent) == expected
