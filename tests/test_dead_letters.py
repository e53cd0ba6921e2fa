"""The dead-letter queue in Redis: newest first, filters, and careful removal."""

from __future__ import annotations

from typing import Any

import pytest

from eda.core import Core
from eda.dead_letters import MAX_TRACEBACK, DeadLetter
from eda.errors import InvalidInput, NotFound


def letter(event_id: str, handler: str = "h", task_id: str = "t1", **fields: Any) -> DeadLetter:
    values: dict[str, Any] = {
        "event_id": event_id, "event_type": "a.b", "handler": handler,
        "error_class": "eda.errors.PermanentError", "error": "boom", "traceback": "tb",
        "attempts": 1, "first_failure_at": "2026-01-01T00:00:00Z",
        "last_failure_at": "2026-01-01T00:00:01Z", "task_id": task_id,
    }  # fmt: skip
    values.update(fields)
    return DeadLetter(**values)


def test_dead_letters_are_listed_newest_first_and_filtered(core: Core) -> None:
    core.dead_letters.add(letter("e1", event_type="a.b"))
    core.dead_letters.add(letter("e2", handler="other", event_type="c.d"))
    core.dead_letters.add(letter("e3", event_type="c.d"))

    assert [x.event_id for x in core.dead_letter_list()] == ["e3", "e2", "e1"]
    assert [x.event_id for x in core.dead_letter_list(event_type="c.d")] == ["e3", "e2"]
    assert [x.event_id for x in core.dead_letter_list(handler="other")] == ["e2"]
    assert [x.event_id for x in core.dead_letter_list(limit=1)] == ["e3"]
    with pytest.raises(InvalidInput, match="limit"):
        core.dead_letter_list(limit=0)


def test_a_long_traceback_keeps_its_end(core: Core) -> None:
    core.dead_letters.add(letter("e1", traceback="x" * 10_000 + "the end"))
    kept = core.dead_letter("e1:h").traceback
    assert len(kept) == MAX_TRACEBACK and kept.endswith("the end")


def test_removal_with_a_task_id_spares_a_newer_letter_of_the_same_delivery(core: Core) -> None:
    core.dead_letters.add(letter("e1", task_id="new-task"))  # the retry died again already

    assert core.dead_letters.remove("e1:h", task_id="old-task") is False
    assert core.dead_letter("e1:h").task_id == "new-task"
    assert core.dead_letters.remove("e1:h", task_id="new-task") is True
    with pytest.raises(NotFound):
        core.dead_letter("e1:h")
    assert core.dead_letters.count() == 0


def test_discarding_needs_a_reason_and_records_it_on_the_delivery(core: Core) -> None:
    event_id = core.publish("a.b", {}, "test").event_id
    core.store.transition(event_id, "h", "dead", "permanent error: boom")
    core.dead_letters.add(letter(event_id))
    with pytest.raises(InvalidInput, match="say why"):
        core.discard_dead_letter(f"{event_id}:h", " ")

    core.discard_dead_letter(f"{event_id}:h", "known bad payload")

    assert core.dead_letter_list() == []
    history = core.get_event(event_id).deliveries["h"]["history"]
    assert history[-1]["reason"] == "discarded: known bad payload"
