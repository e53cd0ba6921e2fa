"""Resuming an agent run from its journal: the conversation so far, and where to go on.

The journal (:mod:`eda.journal`) holds the run's first request, every model
response and every tool call's start and result. A new attempt of the run gets
the conversation rebuilt from it, each completed tool call's result as it was
recorded, and the last response as the turn to act on: its tool calls without a
result run (again, with the same idempotency key), and a final answer ends the run
without asking the model again. What this attempt did before its worker died (an
attempt restarted in place) counts in its record; earlier attempts' turns and
tokens count toward the run's limits only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.record import AgentRecord, Turn
from agents.toolbox import ToolCall, result_block

#: Entry fields that are the journal's, not the request's.
ENTRY_FIELDS = ("kind", "attempt", "at")


@dataclass
class Resumed:
    """A run's state from its journal; ``request`` None means nothing was journaled yet."""

    request: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: The last response, to act on before asking the model again.
    pending: Turn | None = None
    #: Turns and tokens of earlier attempts of the run.
    turns: int = 0
    tokens: int = 0


def resume(entries: list[dict[str, Any]], attempt: int, record: AgentRecord) -> Resumed:
    """The run's state from its journal entries; this attempt's own steps go on ``record``."""
    state = Resumed()
    turns: list[Turn] = []
    for entry in entries:
        kind = entry.get("kind")
        own = entry.get("attempt") == attempt
        if kind == "request" and state.request is None:
            state.request = {k: v for k, v in entry.items() if k not in ENTRY_FIELDS}
        elif kind == "response":
            turn = Turn(entry["content"], entry["stop_reason"], entry.get("usage") or {})
            turns.append(turn)
            if own:
                record.count(turn)
            else:
                record.note(turn)
                state.turns += 1
                state.tokens += sum(turn.usage.values())
        elif kind == "tool_result" and turns:
            call = ToolCall.from_entry(entry)
            turns[-1].results[entry["tool_use_id"]] = call
            if own:
                record.tool_calls.append(call)
    if state.request is None:
        return state
    record.resumed_after_turns = state.turns
    state.messages = list(state.request.get("messages") or [])
    for turn in turns[:-1]:
        state.messages.append({"role": "assistant", "content": turn.content})
        if turn.stop_reason == "tool_use":
            state.messages.append({"role": "user", "content": _results(turn)})
    if turns:
        state.messages.append({"role": "assistant", "content": turns[-1].content})
        state.pending = turns[-1]
    return state


def _results(turn: Turn) -> list[dict[str, Any]]:
    """The tool_result blocks answering a completed turn, in its tool calls' order."""
    uses = [block for block in turn.content if block.get("type") == "tool_use"]
    return [result_block(block["id"], turn.results.get(block["id"])) for block in uses]
