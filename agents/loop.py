"""The agent loop: Messages API calls and local tool runs until the agent is done.

Each turn sends the whole conversation (so it can be recorded and replayed),
then answers every ``tool_use`` block with a ``tool_result`` carrying its id,
until the model ends its turn, runs out of output tokens, or the delivery hits
its turn limit or token budget. Tool calls the model asks for on a turn after
which no further turn is allowed are not run (they are recorded as such): an
action whose result nobody will read is not taken.

On any error the record so far is attached to the exception as ``outcome``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agents.backend import Backend, DryRunBackend
from agents.context import DeliveryContext
from agents.definitions import AgentSpec
from agents.prompt import event_message, system_blocks
from agents.record import OUTCOMES, AgentRecord
from agents.toolbox import Toolbox, ToolCall

if TYPE_CHECKING:
    from anthropic.types import Message

log = logging.getLogger(__name__)


def build_request(spec: AgentSpec, model: str, context: DeliveryContext) -> dict[str, Any]:
    """The first Messages API request of a delivery (no sampling parameters: the API
    version the SDK speaks refuses them)."""
    request: dict[str, Any] = {
        "model": model,
        "max_tokens": spec.max_tokens,
        "system": system_blocks(spec.name, spec.instructions),
        "messages": [event_message(context)],
    }
    definitions = Toolbox(spec.tools).definitions()
    if definitions:
        request["tools"] = definitions
    return request


def run_agent(
    spec: AgentSpec, model: str, context: DeliveryContext, backend: Backend
) -> dict[str, Any]:
    """Handle one event with one agent; the record of what it did (the delivery's outcome)."""
    record = AgentRecord(agent=spec.name, model=model, backend=backend.name)
    request = build_request(spec, model, context)
    if backend.name == DryRunBackend.name:
        record.outcome = "dry_run"
        record.request = {key: request.get(key) for key in ("system", "messages", "tools")}
        log.info("agent %s ran dry (no API key): the request is recorded, no model was called",
                 spec.name, extra={"event_id": context.event.id})  # fmt: skip
        return record.as_dict()
    try:
        _converse(spec, request, context, Toolbox(spec.tools), backend, record)
    except Exception as exc:
        exc.outcome = record.as_dict()  # type: ignore[attr-defined]
        raise
    log.info("agent %s: %s after %d turns, %d tool calls, %d tokens", spec.name, record.outcome,
             record.turns, len(record.tool_calls), record.tokens_used(),
             extra={"event_id": context.event.id})  # fmt: skip
    return record.as_dict()


def _converse(
    spec: AgentSpec,
    request: dict[str, Any],
    context: DeliveryContext,
    toolbox: Toolbox,
    backend: Backend,
    record: AgentRecord,
) -> None:
    messages: list[dict[str, Any]] = request["messages"]
    while True:
        reply = backend.create(request)
        record.count(reply)
        messages.append({"role": "assistant", "content": _blocks(reply)})
        limit = _limit_reached(spec, record)
        if reply.stop_reason == "pause_turn" and limit is None:
            continue  # the API paused a long turn: sending it back lets the model go on
        if reply.stop_reason not in ("tool_use", "pause_turn"):
            record.outcome = OUTCOMES.get(str(reply.stop_reason), str(reply.stop_reason))
            return
        uses = [block for block in reply.content if block.type == "tool_use"]
        if limit is not None:
            record.tool_calls.extend(_not_run(block, limit) for block in uses)
            record.outcome = limit
            return
        calls = [toolbox.call(block.name, block.input, context) for block in uses]
        record.tool_calls.extend(calls)
        messages.append({"role": "user", "content": [
            _tool_result(block.id, call) for block, call in zip(uses, calls, strict=True)
        ]})  # fmt: skip


def _limit_reached(spec: AgentSpec, record: AgentRecord) -> str | None:
    """Which limit forbids another model call, if any."""
    if record.turns >= spec.max_turns:
        return "max_turns"
    if record.tokens_used() >= spec.token_budget:
        return "token_budget"
    return None


def _blocks(reply: Message) -> list[dict[str, Any]]:
    """The reply's content as sent back to the API (and as JSON for the record)."""
    return [block.to_dict(mode="json", exclude_none=True) for block in reply.content]


def _tool_result(tool_use_id: str, call: ToolCall) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id,
                              "content": call.result or "(no output)"}  # fmt: skip
    if call.is_error:
        result["is_error"] = True
    return result


def _not_run(block: Any, limit: str) -> ToolCall:
    reason = f"not run: the delivery reached its {limit.replace('_', ' ')} limit"
    return ToolCall(block.name, block.input, reason, is_error=True)
