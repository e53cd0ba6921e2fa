"""An agent run's journal: each step written to the store as it happens, so a run resumes.

One journal per delivery and run (``<event id>:<handler>`` and the run number):
every attempt of the run appends to it and a new attempt rebuilds the
conversation from it, while a replay or a retry from the dead-letter queue (a
new run) starts a fresh one and keeps the old. Entries are JSON objects with
``kind``, ``attempt`` and ``at``:

``request``      once a run: what the model is sent first (model, system prompt,
                 the event message with its enrichment, tools by name)
``response``     a model reply: its content blocks, stop reason, usage, duration
``tool_start``   a tool call about to run: tool_use id, name, input, idempotency key
``tool_result``  its result (trimmed as the model got it), error, refusal, duration
``end``          how the run ended

A run's journal holds at most ``EDA_JOURNAL_MAX_BYTES`` of JSON: an entry that
would pass it is not written and :meth:`Journal.append` says so. The journal is
one hash per event (``keys.journal``), deleted with the event's record when
retention trims it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eda.errors import NotFound, reaching_redis
from eda.times import now_iso

if TYPE_CHECKING:
    from eda.store import EventStore

#: Entry kinds, in the order a turn writes them.
KINDS = ("request", "response", "tool_start", "tool_result", "end")


def run_key(handler: str, run: int) -> str:
    """The field prefix of one delivery's run in its event's journal hash."""
    return f"{handler}#{run}"


@dataclass
class Journal:
    """The journal of one run of one delivery."""

    store: EventStore
    event_id: str
    handler: str
    run: int

    def append(self, kind: str, attempt: int, **data: Any) -> bool:
        """Write one entry; False when the run's journal is full (nothing was written).

        Raises NotFound when the event is no longer stored, StoreUnavailable when
        Redis cannot be reached.
        """
        entry = {"kind": kind, "attempt": attempt, "at": now_iso(), **data}
        keys = self.store.keys
        reply = self.store.run_scripts(
            [
                (
                    self.store.scripts.journal,
                    [keys.journal(self.event_id), keys.event(self.event_id)],
                    [
                        run_key(self.handler, self.run),
                        json.dumps(entry, default=str),
                        self.store.settings.journal_max_bytes,
                    ],
                )
            ]
        )[0]
        if isinstance(reply, Exception):
            if str(reply).startswith("NOTFOUND"):
                raise NotFound("event_id", f"no event {self.event_id!r} is stored")
            raise reply
        return int(reply[0]) > 0

    def entries(self) -> list[dict[str, Any]]:
        """The run's entries, oldest first."""
        return journal_runs(self.store, self.event_id).get(self.handler, {}).get(self.run, [])


def journal_runs(store: EventStore, event_id: str) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Every journal of an event: by handler, by run, the entries oldest first."""
    with reaching_redis():
        fields: dict[str, str] = store.redis.hgetall(store.keys.journal(event_id))  # type: ignore[assignment]
    return _parse(fields.items())


def _parse(fields: Iterable[tuple[str, str]]) -> dict[str, dict[int, list[dict[str, Any]]]]:
    numbered: dict[str, dict[int, list[tuple[int, dict[str, Any]]]]] = {}
    for name, value in fields:
        handler, run, number = name.rsplit("#", 2)
        if not number.isdigit():  # the run's count and size
            continue
        runs = numbered.setdefault(handler, {})
        runs.setdefault(int(run), []).append((int(number), json.loads(value)))
    return {
        handler: {run: [entry for _, entry in sorted(items)] for run, items in sorted(runs.items())}
        for handler, runs in numbered.items()
    }
