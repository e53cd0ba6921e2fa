"""The dead-letter queue in Redis: newest first, filters, careful removal, and retries."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

from eda.core import Core
from eda.dead_letters import MAX_TRACEBACK
from eda.errors import InvalidInput, NotFound
from eda.event import Event
from eda.settings import Settings
from tasks import app
from tasks.enqueue import CeleryEnqueuer
from tests.conftest import RedisServer, wait_for
from tests.handlers import attempts
from tests.lanes import lane_length
from tests.lifecycle import kill, requeue
from tests.redis_cost import cost


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


def test_a_retry_takes_only_the_letter_its_dead_task_left(core: Core) -> None:
    event = stored(core)
    kill(core.deliveries, event, "h", task="new-task")  # it died again since it was read
    letter = f"{event.id}:h"

    kept = requeue(core.deliveries, event.id, "h", "t2", take_letter="old-task")
    assert kept.extra == () and core.dead_letter(letter).task_id == "new-task"

    taken = requeue(core.deliveries, event.id, "h", "t3", take_letter="new-task")
    assert json.loads(taken.extra[0])["task_id"] == "new-task"
    with pytest.raises(NotFound):
        core.dead_letter(letter)
    assert core.dead_letters.count() == 0


def by_letter(core: Core, event: Event) -> Any:
    return core.retry_dead_letter(f"{event.id}:h")


def by_event(core: Core, event: Event) -> Any:
    return core.retry_event(event.id)


class DiesAfterSending(CeleryEnqueuer):
    """The real enqueuer, in a process that dies just after the broker took the message."""

    def deliver_many(
        self, deliveries: list[tuple[Event, str, str]], *, replay: bool = False
    ) -> None:
        super().deliver_many(deliveries, replay=replay)
        raise SystemExit("killed")


def by_replay(core: Core, event: Event) -> Any:
    return core.replay(event_type=event.type, handler="h")


@pytest.mark.parametrize("retry", [by_letter, by_event, by_replay])
def test_a_retry_that_dies_after_sending_leaves_no_dead_letter_beside_its_queued_delivery(
    retry: Callable[[Core, Event], Any], core: Core, idle_broker: str
) -> None:
    dying = Core(core.settings, core.redis, DiesAfterSending(app, broker_url=idle_broker))
    event = stored(dying)
    kill(dying.deliveries, event, "h")

    with pytest.raises(SystemExit):
        retry(dying, event)

    assert dying.get_event(event.id).deliveries["h"]["status"] == "queued"
    assert dying.dead_letter_list() == []


def test_a_retry_the_broker_refuses_leaves_the_delivery_dead_and_its_letter_in_place(
    core: Core, refusing_broker: str
) -> None:
    nowhere = CeleryEnqueuer(app, broker_url=refusing_broker)
    refused = Core(core.settings, core.redis, nowhere)
    older, newer = stored(refused), stored(refused)
    letter = kill(refused.deliveries, older, "h")
    kill(refused.deliveries, newer, "h")

    with pytest.raises(OperationalError):
        refused.retry_dead_letter(letter.id)

    record = refused.get_event(older.id).deliveries["h"]
    assert record["status"] == "dead"
    assert record["history"][-1]["reason"].startswith("could not enqueue")
    assert refused.dead_letter(letter.id) == letter.trimmed()
    assert [x.event_id for x in refused.dead_letter_list()] == [newer.id, older.id]


def test_a_batch_retry_the_broker_refuses_leaves_every_delivery_dead_and_every_letter(
    core: Core, refusing_broker: str
) -> None:
    nowhere = CeleryEnqueuer(app, broker_url=refusing_broker)
    refused = Core(core.settings, core.redis, nowhere)
    events = [stored(refused) for _ in range(5)]
    letters = [kill(refused.deliveries, event, "h") for event in events]

    with pytest.raises(OperationalError):
        refused.retry_dead_letters()

    for event in events:
        record = refused.get_event(event.id).deliveries["h"]
        assert record["status"] == "dead"
        assert record["history"][-1]["reason"].startswith("could not enqueue")
    assert refused.dead_letter_list() == [letter.trimmed() for letter in reversed(letters)]


@pytest.mark.redis_broker
def test_a_batch_retry_costs_redis_a_few_round_trips_whatever_the_letters(
    make_settings: Callable[..., Settings], own_redis: tuple[RedisServer, redis.Redis]
) -> None:
    """Counted by the server, store and broker together: the letters read, their events
    read, the new runs recorded (each taking its letter), the bindings read, the messages
    sent in pipelines of 50, the letters left counted. One letter at a time, 40 letters
    cost 200 round trips."""
    server, counter = own_redis
    broker = server.url.rsplit("/", 1)[0] + "/1"
    settings = make_settings(redis_url=server.url, replay_rate=1e6)  # one batch, unpaced
    retrying = Core(settings, None, CeleryEnqueuer(app, broker))
    events = [stored(retrying) for _ in range(42)]
    for event in events:
        kill(retrying.deliveries, event, "h")
    for event in events[:2]:  # the first retries load the scripts, bind the type, connect
        retrying.retry_dead_letter(f"{event.id}:h")

    with cost(counter) as spent:
        report = retrying.retry_dead_letters(limit=100)

    assert (len(report.retried), report.left) == (40, 0)
    assert spent.reads <= 25, spent
    assert spent.of("smembers") == 1, spent
    for event in events:
        record = retrying.get_event(event.id).deliveries["h"]
        assert (record["status"], len(record["runs"])) == ("queued", 2)
    with redis.Redis.from_url(broker) as lanes:
        assert lane_length(lanes) == 42


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
