"""What an agent did on one delivery: the record kept as the delivery's outcome.

::

    {"agent", "model", "backend": "anthropic" | "dry_run",
     "outcome": "completed" | "max_turns" | "max_tokens" | "token_budget" | "refusal"
                | "context_window_exceeded" | "dry_run" | "failed",
     "text", "tool_calls": [{"name", "input", "result", "is_error", "duration_ms", "refused"}],
     "stop_reason", "turns",
     "usage": {"input_tokens", "output_tokens", "cache_creation_input_tokens",
               "cache_read_input_tokens"},
     "request": {...}}          # dry run only: what would have been sent

Token counts are summed over every model call of the delivery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents.toolbox import ToolCall

if TYPE_CHECKING:
    from anthropic.types import Message

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

    def count(self, reply: Message) -> None:
        """Add one model call: its tokens, stop reason and text."""
        self.turns += 1
        for name in USAGE_FIELDS:
            self.usage[name] += getattr(reply.usage, name, None) or 0
        self.stop_reason = reply.stop_reason
        texts = [block.text for block in reply.content if block.type == "text"]
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
        return record
