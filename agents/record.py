"""What an agent did on one delivery: the record kept as the delivery's outcome.

::

    {"agent", "model", "backend": "anthropic" | "dry_run",
     "outcome": "completed" | "max_turns" | "max_tokens" | "token_budget" | "refusal"
                | "context_window_exceeded" | "journal_limit" | "dry_run" | "failed",
     "text", "tool_calls": [{"name", "input", "result", "is_error", "duration_ms", "refused"}],
     "stop_reason", "turns",
     "resumed_after_turns",     # a resumed attempt: the run's turns made before it
     "usage": {"input_tokens", "output_tokens", "cache_creation_input_tokens",
               "cache_read_input_tokens"},
     "request": {...}}          # dry run only: what would have been sent

Turns, tool calls and token counts are those of the attempt (of every incarnation
of it, when its worker died and it started again): the delivery's ``totals`` sum
them over all attempts and runs. The stop reason and text are the run's last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.toolbox import ToolCall

#: The token counters of the Messages API's ``usage``, summed over turns.
USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
#: The outcome a final stop reason stands for (others are kept as they are).
OUTCOMES = {
    "end_turn": "completed",
    "stop_sequence": "completed",
    "max_tokens": "max_tokens",
    "refusal": "refusal",
    "model_context_window_exceeded": "context_window_exceeded",
}
#: Outcomes of a run that stopped short on a limit: its delivery is ``stopped``.
STOPPED_OUTCOMES = frozenset(
    {
        "max_turns",
        "token_budget",
        "max_tokens",
        "refusal",
        "context_window_exceeded",
        "journal_limit",
    }
)


@dataclass
class Turn:
    """One model response as the journal keeps it, and the results of its tool calls."""

    content: list[dict[str, Any]]
    stop_reason: str
    usage: dict[str, int]
    results: dict[str, ToolCall] = field(default_factory=dict)


@dataclass
class AgentRecord:
    """Built up turn by turn; :meth:`as_dict` is the delivery's outcome."""

    agent: str
    model: str
    backend: str
    outcome: str = "failed"  # until the loop says otherwise
    text: str = ""
    stop_reason: str | None = None
    turns: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_FIELDS, 0))
    request: dict[str, Any] | None = None
    resumed_after_turns: int = 0

    def count(self, turn: Turn) -> None:
        """Add one model call of this attempt: its tokens, stop reason and text."""
        self.turns += 1
        for name in USAGE_FIELDS:
            self.usage[name] += turn.usage.get(name) or 0
        self.note(turn)

    def note(self, turn: Turn) -> None:
        """A model call of the run (perhaps an earlier attempt's): its stop reason and text."""
        self.stop_reason = turn.stop_reason
        texts = [str(b.get("text", "")) for b in turn.content if b.get("type") == "text"]
        if texts:
            self.text = "\n".join(texts)

    def tokens_used(self) -> int:
        """Every token the delivery has cost so far, cached ones included."""
        return sum(self.usage.values())

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "agent": self.agent,
            "model": self.model,
            "backend": self.backend,
            "outcome": self.outcome,
            "text": self.text,
            "tool_calls": [call.as_record() for call in self.tool_calls],
            "stop_reason": self.stop_reason,
            "turns": self.turns,
            "usage": dict(self.usage),
        }
        if self.request is not None:
            record["request"] = self.request
        if self.resumed_after_turns:
            record["resumed_after_turns"] = self.resumed_after_turns
        return record
