"""An agent run's journal in the store: per delivery and run, bounded, trimmed with its event."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from eda.core import Core
from eda.errors import NotFound
from eda.journal import Journal, journal_runs
from eda.settings import Settings


def test_each_run_of_a_delivery_has_its_own_journal_in_order(core: Core) -> None:
    event_id = core.publish("alert.triggered", {}, "monitoring").event_id
    first = Journal(core.store, event_id, "Responder", 1)
    replay = Journal(core.store, event_id, "Responder", 2)

    assert first.append("request", 1, messages=["hello"])
    assert first.append("response", 1, stop_reason="tool_use")
    assert first.append("response", 2, stop_reason="end_turn")
    assert replay.append("request", 1, messages=["again"])

    assert [(e["kind"], e["attempt"]) for e in first.entries()] == [
        ("request", 1),
        ("response", 1),
        ("response", 2),
    ]
    assert [e["messages"] for e in replay.entries()] == [["again"]]
    assert set(journal_runs(core.store, event_id)["Responder"]) == {1, 2}


def test_a_run_journal_refuses_entries_past_its_bound_and_writes_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    core = Core(make_settings(journal_max_bytes=4096))
    event_id = core.publish("alert.triggered", {}, "monitoring").event_id
    journal = Journal(core.store, event_id, "Responder", 1)

    assert journal.append("response", 1, text="x" * 3000)
    assert not journal.append("response", 1, text="y" * 3000)

    assert len(journal.entries()) == 1
    assert Journal(core.store, event_id, "Other", 1).append("response", 1, text="z" * 3000)


def test_a_journal_is_deleted_with_its_event_when_retention_trims_it(
    make_settings: Callable[..., Settings], client: object
) -> None:
    core = Core(make_settings(stream_maxlen=2))
    old = core.publish("alert.triggered", {}, "monitoring").event_id
    Journal(core.store, old, "Responder", 1).append("request", 1)
    assert core.redis.exists(core.keys.journal(old))

    for _ in range(3):
        core.publish("alert.triggered", {}, "monitoring")

    assert not core.redis.exists(core.keys.journal(old))


def test_an_entry_is_one_command_and_is_written_after_the_scripts_are_flushed(
    core: Core,
) -> None:
    event_id = core.publish("alert.triggered", {}, "monitoring").event_id
    journal = Journal(core.store, event_id, "Responder", 1)
    journal.append("request", 1, messages=["hello"])
    before = core.redis.info("commandstats")

    assert journal.append("response", 1, stop_reason="end_turn")
    after = core.redis.info("commandstats")
    sent = {
        name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
        for name in after
        if name != "cmdstat_info" and after[name] != before.get(name)
    }
    core.redis.script_flush()
    assert journal.append("response", 2, stop_reason="end_turn")

    assert sent["cmdstat_evalsha"] == 1 and "cmdstat_script|load" not in sent
    assert [e["attempt"] for e in journal.entries()] == [1, 1, 2]


def test_an_entry_for_an_event_no_longer_stored_is_not_found_and_not_written(
    core: Core,
) -> None:
    journal = Journal(core.store, "no-such-event", "Responder", 1)

    with pytest.raises(NotFound):
        journal.append("request", 1, messages=["hello"])

    assert journal.entries() == []
