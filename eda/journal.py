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

An entry that nothing acts on before the next one (a model's response: its tool calls'
starts, or the run's end, come next) may be *held* (:meth:`Journal.hold`): it is written
with the next entry, in the same script call, or, at the end of a run that a delivery
runs, by the delivery's finish step itself (:func:`deferring`), in the same call that
records the attempt's end. Nothing is held across a model call or a tool call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from eda.errors import NotFound, reaching_redis
from eda.times import now_iso

if TYPE_CHECKING:
    from eda.store import EventStore

#: Entry kinds, in the order a turn writes them.
KINDS = ("request", "response", "tool_start", "tool_result", "end")
#: Characters of a text or tool result a compact transcript shows.
COMPACT_CHARS = 300


def run_key(handler: str, run: int) -> str:
    """The field prefix of one delivery's run in its event's journal hash."""
    return f"{handler}#{run}"


@dataclass
class Deferred:
    """Entries of one run that the delivery's finish step writes (see :func:`deferring`)."""

    event_id: str
    handler: str
    run: int
    entries: list[str] = field(default_factory=list)


_deferred: ContextVar[Deferred | None] = ContextVar("journal_deferred", default=None)


@contextmanager
def deferring(deferred: Deferred) -> Iterator[Deferred]:
    """Within the block, a journal of ``deferred``'s run hands the entries it holds at its
    end to ``deferred``, whose delivery writes them with the attempt's end."""
    token = _deferred.set(deferred)
    try:
        yield deferred
    finally:
        _deferred.reset(token)


@dataclass
class Journal:
    """The journal of one run of one delivery."""

    store: EventStore
    event_id: str
    handler: str
    run: int
    #: Entries (JSON) held for the next write.
    held: list[str] = field(default_factory=list)
    #: Bytes the run's journal held at this journal's last write (None: none yet).
    used: int | None = None

    def append(self, kind: str, attempt: int, **data: Any) -> bool:
        """Write one entry (after those held); False when the run's journal is full (the
        entry was not written).

        Raises NotFound when the event is no longer stored, StoreUnavailable when
        Redis cannot be reached.
        """
        self.held.append(_entry(kind, attempt, data))
        return self.flush()

    def hold(self, kind: str, attempt: int, **data: Any) -> bool:
        """Keep an entry to be written with the next one, or with the delivery's end
        (:meth:`settle`); written at once when this journal does not know that it fits.
        False when the run's journal is full."""
        entry = _entry(kind, attempt, data)
        self.held.append(entry)
        bound = self.store.settings.journal_max_bytes
        if self.used is None or self.used + sum(map(len, self.held)) > bound:
            return self.flush()
        return True

    def flush(self) -> bool:
        """Write the entries held, in one script call; False when one did not fit."""
        if not self.held:
            return True
        entries, self.held = self.held, []
        keys = self.store.keys
        try:
            reply = self.store.run_script(
                self.store.scripts.journal,
                [keys.journal(self.event_id), keys.event(self.event_id)],
                [
                    run_key(self.handler, self.run),
                    self.store.settings.journal_max_bytes,
                    *entries,
                ],
            )
        except redis.ResponseError as exc:
            if str(exc).startswith("NOTFOUND"):
                raise NotFound("event_id", f"no event {self.event_id!r} is stored") from None
            raise
        self.used = int(reply[1])
        return int(reply[0]) > 0

    def settle(self) -> bool:
        """At the run's end: the entries held go to the delivery's finish step when this
        run's delivery is deferring them, and are written now otherwise."""
        deferred = _deferred.get()
        if deferred is not None and (deferred.event_id, deferred.handler, deferred.run) == (
            self.event_id,
            self.handler,
            self.run,
        ):
            deferred.entries += self.held
            self.held = []
            return True
        return self.flush()

    def entries(self) -> list[dict[str, Any]]:
        """The run's entries, oldest first."""
        return journal_runs(self.store, self.event_id).get(self.handler, {}).get(self.run, [])


def _entry(kind: str, attempt: int, data: dict[str, Any]) -> str:
    return json.dumps({"kind": kind, "attempt": attempt, "at": now_iso(), **data}, default=str)


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


def transcripts(
    store: EventStore, event_id: str, *, full: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """What each agent run of the event did, turn by turn: by handler, one item a run.

    Compact by default (what was sent, by tool name; each turn's attempt, stop reason,
    tokens, duration, text and tool calls with inputs and trimmed results); ``full``
    adds the system prompt, the first message (the event and its enrichment) and every
    entry as journaled.
    """
    shown: dict[str, list[dict[str, Any]]] = {}
    for handler, runs in journal_runs(store, event_id).items():
        shown[handler] = [_transcript(run, entries, full) for run, entries in runs.items()]
    return shown


def _transcript(run: int, entries: list[dict[str, Any]], full: bool) -> dict[str, Any]:
    sent: dict[str, Any] = {}
    turns: list[dict[str, Any]] = []
    for entry in entries:
        if entry["kind"] == "request":
            sent = {"model": entry.get("model"), "tools": entry.get("tool_names", [])}
            if full:
                sent |= {"system": entry.get("system"), "messages": entry.get("messages")}
        elif entry["kind"] == "response":
            turns.append(_turn(entry, full))
        elif entry["kind"] == "tool_result" and turns:
            turns[-1]["tool_calls"].append(_tool_call(entry, full))
    transcript = {"run": run, "sent": sent, "turns": turns, "totals": _totals(turns)}
    if full:
        transcript["entries"] = entries
    return transcript


def _turn(entry: dict[str, Any], full: bool) -> dict[str, Any]:
    content = entry.get("content") or []
    text = "\n".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
    return {
        "attempt": entry.get("attempt"),
        "at": entry.get("at"),
        "stop_reason": entry.get("stop_reason"),
        "usage": entry.get("usage") or {},
        "duration_ms": entry.get("duration_ms"),
        "text": text if full else _short(text),
        "tool_calls": [],
    }


def _tool_call(entry: dict[str, Any], full: bool) -> dict[str, Any]:
    result = str(entry.get("result", ""))
    return {
        "attempt": entry.get("attempt"),
        "name": entry.get("name"),
        "input": entry.get("input"),
        "result": result if full else _short(result),
        "is_error": entry.get("is_error", False),
        "refused": entry.get("refused", False),
        "duration_ms": entry.get("duration_ms"),
    }


def _totals(turns: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {"turns": len(turns), "tool_calls": 0, "refused_tool_calls": 0}
    for turn in turns:
        for name, value in turn["usage"].items():
            totals[name] = totals.get(name, 0) + int(value or 0)
        totals["tool_calls"] += len(turn["tool_calls"])
        totals["refused_tool_calls"] += sum(1 for c in turn["tool_calls"] if c["refused"])
    return totals


def _short(text: str) -> str:
    if len(text) <= COMPACT_CHARS:
        return text
    return f"{text[:COMPACT_CHARS]}… [{len(text) - COMPACT_CHARS} more characters]"
