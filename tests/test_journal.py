"""An agent run's journal in the store: per delivery and run, bounded, trimmed with its event."""

from __future__ import annotations

from collections.abc import Callable

from eda.core import Core
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
