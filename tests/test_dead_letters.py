"""The dead-letter queue in Redis: newest first, filters, and careful removal."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from eda.core import Core
from eda.dead_letters import MAX_TRACEBACK
from eda.errors import InvalidInput, NotFound
from eda.event import Event
from tests.conftest import wait_for
from tests.handlers import attempts
from tests.lifecycle import kill


def stored(core: Core, event_type: str = "a.b") -> Event:
    event = Event.create(type=event_type, source="test")
    core.store.publish(event)
    return event


def test_dead_letters_are_listed_newest_first_and_filtered(core: Core) -> None:
    e1, e2, e3 = stored(core), stored(core, "c.d"), stored(core, "c.d")
    kill(core.deliveries, e1, "h")
    kill(core.deliveries, e2, "other")
    kill(core.deliveries, e3, "h")

    assert [x.event_id for x in core.dead_letter_list()] == [e3.id, e2.id, e1.id]
    assert [x.event_id for x in core.dead_letter_list(event_type="c.d")] == [e3.id, e2.id]
    assert [x.event_id for x in core.dead_letter_list(handler="other")] == [e2.id]
    assert [x.event_id for x in core.dead_letter_list(limit=1)] == [e3.id]
    with pytest.raises(InvalidInput, match="limit"):
        core.dead_letter_list(limit=0)


def test_a_page_of_dead_letters_says_how_many_more_match(core: Core) -> None:
    events = [stored(core, "a.b" if n % 2 else "c.d") for n in range(5)]
    for event in events:
        kill(core.deliveries, event, "h")

    page = core.dead_letter_page(limit=2)
    assert ([x.event_id for x in page.letters], page.more) == ([events[4].id, events[3].id], 3)
    odd = core.dead_letter_page(limit=1, event_type="a.b")
    assert ([x.event_id for x in odd.letters], odd.more) == ([events[3].id], 1)
    assert core.dead_letter_page(limit=5).more == 0
    assert core.dead_letter_page(handler="other").as_dict() == {"dead_letters": [], "more": 0}


def test_a_long_traceback_keeps_its_end(core: Core) -> None:
    event = stored(core)
    kill(core.deliveries, event, "h", traceback="x" * 10_000 + "the end")
    kept = core.dead_letter(f"{event.id}:h").traceback
    assert len(kept) == MAX_TRACEBACK and kept.endswith("the end")


def test_removal_with_a_task_id_spares_a_newer_letter_of_the_same_delivery(core: Core) -> None:
    event = stored(core)
    kill(core.deliveries, event, "h", task="new-task")  # the retry died again already
    letter = f"{event.id}:h"

    assert core.dead_letters.remove(letter, task_id="old-task") is False
    assert core.dead_letter(letter).task_id == "new-task"
    assert core.dead_letters.remove(letter, task_id="new-task") is True
    with pytest.raises(NotFound):
        core.dead_letter(letter)
    assert core.dead_letters.count() == 0


def test_discarding_needs_a_reason_and_records_it_on_the_delivery(core: Core) -> None:
    event = stored(core)
    kill(core.deliveries, event, "h", "permanent error: boom")
    with pytest.raises(InvalidInput, match="say why"):
        core.discard_dead_letter(f"{event.id}:h", " ")

    core.discard_dead_letter(f"{event.id}:h", "known bad payload")

    assert core.dead_letter_list() == []
    history = core.get_event(event.id).deliveries["h"]["history"]
    assert history[-1]["reason"] == "discarded: known bad payload"


def test_retrying_until_empty_retries_each_letter_once_when_the_handler_always_fails(
    live: Core, unique_type: Callable[[str], str]
) -> None:
    import tasks

    # Paced slower than the worker fails a delivery, so each retried letter is back
    # (with a new task id) long before the call could run out of letters.
    paced = tasks.connect(live.settings.model_copy(update={"replay_rate": 10.0}))
    event_type = unique_type("always_fails")
    paced.subscribe([event_type], "tests.handlers:fail")
    ids = [paced.publish(event_type, {}, "t").event_id for _ in range(3)]

    def dead() -> int:
        return len(paced.dead_letter_list(10, event_type))

    wait_for(lambda: dead() == 3)
    report = paced.retry_dead_letters(event_type=event_type, limit=1, until_empty=True)

    assert sorted(item["event_id"] for item in report.retried) == sorted(ids)
    wait_for(lambda: dead() == 3)
    assert [len(attempts(paced.redis, e, "fail")) for e in ids] == [2, 2, 2]
