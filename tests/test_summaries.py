"""eda.summaries: history pages that read what they show, whatever the events hold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from eda.core import Core
from eda.summaries import MAX_LIMIT, history_page

#: A payload just under the default size limit (1 MiB).
MEGABYTE = {"blob": "x" * 1_000_000}


def bytes_sent(client: redis.Redis) -> int:
    """What the Redis server has sent its clients so far (INFO's own reply included)."""
    stats: Any = client.info("stats")
    return int(stats["total_net_output_bytes"])


@pytest.fixture
def big_events(core: Core, client: redis.Redis, prefix: str) -> Iterator[None]:
    """Forty events of a megabyte each, deleted afterwards (the session's Redis is shared)."""
    for n in range(40):
        core.publish("load.big", MEGABYTE, source="load", subject=str(n))
    yield
    client.delete(*client.scan_iter(match=f"{prefix}:*", count=1000))


@pytest.mark.parametrize("limit", [None, MAX_LIMIT])
@pytest.mark.usefixtures("big_events")
def test_a_page_of_megabyte_events_reads_kilobytes(
    core: Core, client: redis.Redis, limit: int | None
) -> None:
    before = bytes_sent(client)
    page = history_page(core, "load.big", **({"limit": limit} if limit else {}))
    read = bytes_sent(client) - before
    assert len(page.events) >= 20 and page.next_cursor
    assert {e["type"] for e in page.events} == {"load.big"}
    assert read < 60_000, f"a page of {len(page.events)} summaries read {read} bytes"


def test_a_record_stored_without_its_summary_fields_is_still_summarised(
    core: Core, client: redis.Redis
) -> None:
    first = core.publish("old.kind", {"n": 1}, source="before")
    second = core.publish("old.kind", {"n": 2}, source="after")
    client.hdel(core.keys.event(first.event_id), "type", "source", "time")  # as stored before
    page = history_page(core, "old.kind")
    assert [(e["id"], e["source"]) for e in page.events] == [
        (second.event_id, "after"),
        (first.event_id, "before"),
    ]
    assert page.events[1]["time"] == core.get_event(first.event_id).event.timestamp
    assert page.next_cursor is None
