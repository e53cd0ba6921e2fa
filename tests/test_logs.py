"""eda.logs: the line formats, third-party loggers held at WARNING, errors summarised bounded."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from eda import logs
from eda.event import Event
from tests.messages_api import MessagesAPI, message, messages_api, text
from tests.workers import run_python

__all__ = ["messages_api"]

#: Text only the payload of the model request holds.
MARKER = "payload-marker-7f3a"

#: A process that logs as every process of the project does, at DEBUG, and calls the model
#: API with the real SDK (with the SDK's own debug switch on too, the worst case).
PROGRAM = f"""
import logging
import anthropic
from eda import logs
logs.configure("debug", "json")
logging.getLogger("eda.probe").debug("our own debug line")
client = anthropic.Anthropic(max_retries=0)
client.messages.create(model="claude-haiku-5-5", max_tokens=16,
                       messages=[{{"role": "user", "content": "{MARKER}"}}])
"""


def test_at_debug_the_model_sdk_never_logs_a_request_body(messages_api: MessagesAPI) -> None:
    messages_api.script(message(text("ok")))
    done = run_python(PROGRAM, timeout=60, ANTHROPIC_LOG="debug")
    assert "our own debug line" in done.stderr
    assert len(messages_api.requests) == 1  # the request was made, with the marker in it
    assert MARKER not in done.stderr + done.stdout


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the root logger and the third-party loggers back as they were (pytest's capture)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logs.THIRD_PARTY}
    yield
    root.handlers[:], root.level = handlers, level
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.mark.parametrize("level", ["debug", "info", "error"])
def test_third_party_loggers_are_held_at_warning_whatever_the_level(
    restored_logging: None, level: str
) -> None:
    logs.configure(level, "json")
    floor = max(logging.WARNING, logging.getLogger().level)
    for name in logs.THIRD_PARTY:
        assert logging.getLogger(name).getEffectiveLevel() == floor
    # Lowered again by the library itself, a logger still writes nothing below WARNING.
    logging.getLogger("anthropic._base_client").setLevel(logging.DEBUG)
    [handler] = logging.getLogger().handlers
    record = logging.LogRecord("anthropic._base_client", logging.DEBUG, "", 0, "m", None, None)
    assert not handler.filter(record)
    record.levelno = logging.WARNING
    assert handler.filter(record)


def test_an_error_summary_is_its_class_and_a_bounded_first_line() -> None:
    event = Event.create(type="a.b", source="s", payload={"card": MARKER})
    error = ValueError(f"cannot handle {event!r}\n{MARKER} on the next line " + "x" * 500)
    summary = logs.error_summary(error)
    assert summary.startswith("ValueError: cannot handle Event(")
    assert MARKER not in summary
    assert len(summary) <= len("ValueError: ") + logs.MAX_ERROR_TEXT
    assert logs.error_summary(KeyError()) == "KeyError"


def test_an_events_repr_never_shows_its_payload() -> None:
    event = Event.create(type="a.b", source="s", payload={"card": MARKER})
    assert MARKER not in repr(event)
    assert MARKER not in str(event)
    assert event.id in repr(event)
