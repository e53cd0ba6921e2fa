"""The agent loop: Messages API calls and local tool runs until the agent is done.

Each turn sends the whole conversation (so it can be recorded and replayed),
then answers every ``tool_use`` block with a ``tool_result`` carrying its id,
until the model ends its turn, runs out of output tokens, or the delivery hits
its turn limit or token budget. Tool calls the model asks for on a turn after
which no further turn is allowed are not run (they are recorded as such): an
action whose result nobody will read is not taken. Each model request and each
tool call run is a span of the delivery's trace (:mod:`eda.traces`).

**Durable runs.** With a journal (a delivery's run, :mod:`eda.journal`), the
first request, each model response and each tool call's start and result are
written as they happen. A new attempt of the same run rebuilds the conversation
from it (:mod:`agents.resume`) and goes on from the last completed step: no
model turn is asked for twice, no tool call with a recorded result runs again,
and a call that started without a recorded result runs again with the same
idempotency key. Turn and token limits count the whole run.

**Honest ends.** A run that stops on ``max_turns``, ``token_budget``,
``max_tokens``, a refusal, the context window or a full journal raises
:class:`eda.handlers.Stop`: the delivery is ``stopped``, not ``succeeded``.
On any error the record so far is attached to the exception as ``outcome``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from agents.backend import Backend, DryRunBackend
from agents.context import DeliveryContext
from agents.definitions import AgentSpec
from agents.prompt import event_message, system_blocks
from agents.record import OUTCOMES, STOPPED_OUTCOMES, AgentRecord, Turn
from agents.resume import Resumed, resume
from agents.toolbox import Toolbox, ToolCall, result_block
from eda import metrics, traces
from eda.handlers import Stop
from eda.journal import Journal

log = logging.getLogger(__name__)


class JournalFull(Exception):
    """The run's journal reached ``EDA_JOURNAL_MAX_BYTES``: the run stops."""


def build_request(spec: AgentSpec, model: str, context: DeliveryContext) -> dict[str, Any]:
    """The first Messages API request of a delivery (no sampling parameters: the API
    version the SDK speaks refuses them)."""
    request: dict[str, Any] = {
        "model": model,
        "max_tokens": spec.max_tokens,
        "system": system_blocks(spec.name, spec.instructions),
        "messages": [event_message(context)],
    }
    definitions = Toolbox(spec.tools, spec.publishes, spec.name).definitions()
    if definitions:
        request["tools"] = definitions
    return request


def journal_for(context: DeliveryContext) -> Journal | None:
    """The journal of the delivery's run, None when the event came without a delivery."""
    info = context.event.delivery
    if info is None:
        return None
    return Journal(context.core.store, context.event.id, info.handler, info.run)


def run_agent(
    spec: AgentSpec,
    model: str,
    context: DeliveryContext,
    backend: Backend,
    journal: Journal | None = None,
    entries: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Handle one event with one agent; the record of what it did (the delivery's outcome).

    ``entries`` are the journal's so far (a new attempt resumes from them). Raises
    Stop when the run ended on a limit, with the record as its outcome.
    """
    record = AgentRecord(agent=spec.name, model=model, backend=backend.name)
    if backend.name == DryRunBackend.name:
        request = build_request(spec, model, context)
        record.outcome = "dry_run"
        # The system prompt and tools are the agent's, the same for every event: kept once
        # (content-addressed), the event's own messages beside a reference to them.
        template = {key: request.get(key) for key in ("system", "tools")}
        digest = context.core.keep_request_template(template)
        record.request = {"template": digest, "messages": request.get("messages")}
        log.info(
            "agent %s ran dry (no API key): the request is recorded, no model was called",
            spec.name,
            extra={"event_id": context.event.id},
        )
        return record.as_dict()
    attempt = context.event.delivery.attempt if context.event.delivery else 1
    state = resume(entries or [], attempt, record)
    run = AgentRun(spec, model, context, backend, record, journal, attempt, state)
    try:
        run.converse()
    except Exception as exc:
        ended = record.as_dict()
        exc.outcome = ended  # type: ignore[attr-defined]
        metrics.agent_run({**ended, "outcome": record.outcome or "error"})
        raise
    metrics.agent_run(record.as_dict())
    refused = sum(1 for call in record.tool_calls if call.refused)
    # A run that completed only at DEBUG: its record is the delivery's outcome, and a line
    # per run cost a busy worker as much CPU as the rest of the agent's own work.
    level = logging.DEBUG
    if refused or record.outcome in STOPPED_OUTCOMES:
        level = logging.WARNING
    elif record.outcome != "completed":
        level = logging.INFO
    log.log(
        level,
        "agent %s: %s after %d turns, %d tool calls (%d refused), %d tokens",
        spec.name,
        record.outcome,
        state.turns + record.turns,
        len(record.tool_calls),
        refused,
        record.tokens_used(),
        extra={"event_id": context.event.id},
    )
    if record.outcome in STOPPED_OUTCOMES:
        raise Stop(f"the agent stopped: {record.outcome}", outcome=record.as_dict())
    return record.as_dict()


@dataclasses.dataclass
class AgentRun:
    """One attempt at a run: the conversation so far, and what this attempt adds."""

    spec: AgentSpec
    model: str
    context: DeliveryContext
    backend: Backend
    record: AgentRecord
    journal: Journal | None
    attempt: int
    state: Resumed

    def converse(self) -> None:
        try:
            self._turns()
            # The last response was held: it goes with the delivery's end (or now).
            if self.journal is not None and not self.journal.settle():
                raise JournalFull("response")
        except JournalFull:
            self.record.outcome = "journal_limit"
        finally:
            if self.journal is not None and self.journal.held:  # an error is on its way
                self.journal.settle()

    def _turns(self) -> None:
        request = self._request()
        turn = self.state.pending
        while True:
            if turn is None:
                turn = self._ask(request)
            if not self._handle(turn, request["messages"]):
                return
            turn = None

    def _request(self) -> dict[str, Any]:
        """The request: rebuilt from the journal, or new (and journaled)."""
        if self.state.request is not None:
            request = {**self.state.request, "messages": list(self.state.messages)}
            request.pop("tool_names", None)
            tools = Toolbox(self.spec.tools, self.spec.publishes, self.spec.name).definitions()
            if tools:
                request["tools"] = tools
            return request
        request = build_request(self.spec, self.model, self.context)
        names = [tool["name"] for tool in request.get("tools", [])]
        sent = {key: value for key, value in request.items() if key != "tools"}
        self._write("request", **sent, tool_names=names)
        return request

    def _ask(self, request: dict[str, Any]) -> Turn:
        """One model call, journaled before anything acts on it: its response is held, and
        written with what comes next (a tool call's start, the delivery's end), in the same
        store call; every entry before it is written before the call."""
        if self.journal is not None and not self.journal.flush():
            raise JournalFull("response")
        started = time.monotonic()
        with traces.model_turn(str(request["model"]), int(request["max_tokens"])) as span:
            reply = self.backend.create(request)
            usage = {name: getattr(reply.usage, name, None) or 0 for name in self.record.usage}
            traces.turn_answered(span, reply.id, reply.model, str(reply.stop_reason), usage)
        content = [block.to_dict(mode="json", exclude_none=True) for block in reply.content]
        turn = Turn(content, str(reply.stop_reason), usage)
        self.record.count(turn)
        duration = round((time.monotonic() - started) * 1000, 1)
        entry = {"content": content, "stop_reason": turn.stop_reason, "usage": usage}
        if self.journal is not None and not self.journal.hold(
            "response", self.attempt, **entry, duration_ms=duration
        ):
            raise JournalFull("response")
        request["messages"].append({"role": "assistant", "content": content})
        return turn

    def _handle(self, turn: Turn, messages: list[dict[str, Any]]) -> bool:
        """Act on a model turn; False when the run is over."""
        limit = self._limit()
        if turn.stop_reason == "pause_turn" and limit is None:
            return True  # the API paused a long turn: sending it back lets the model go on
        if turn.stop_reason not in ("tool_use", "pause_turn"):
            self.record.outcome = OUTCOMES.get(turn.stop_reason, turn.stop_reason)
            return False
        uses = [block for block in turn.content if block.get("type") == "tool_use"]
        if limit is not None:
            self.record.tool_calls.extend(_not_run(block, limit) for block in uses)
            self.record.outcome = limit
            return False
        toolbox = Toolbox(self.spec.tools, self.spec.publishes, self.spec.name)
        results = []
        for block in uses:
            call = turn.results.get(block["id"]) or self._call(toolbox, block)
            results.append(result_block(block["id"], call))
        messages.append({"role": "user", "content": results})
        return True

    def _call(self, toolbox: Toolbox, block: dict[str, Any]) -> ToolCall:
        """Run one tool call with its idempotency key, journaling its start and result."""
        key = self._idempotency_key(block["id"])
        self._write(
            "tool_start",
            tool_use_id=block["id"],
            name=block["name"],
            input=block["input"],
            idempotency_key=key,
        )
        context = dataclasses.replace(self.context, idempotency_key=key)
        with traces.tool_call(block["name"], block["id"]) as span:
            call = toolbox.call(block["name"], block["input"], context)
            traces.tool_ended(span, call.outcome)
        if call.refused:
            log.warning(
                "agent %s: tool call %s",
                self.spec.name,
                call.result,
                extra={"event_id": self.context.event.id},
            )
        self.record.tool_calls.append(call)
        self._write("tool_result", tool_use_id=block["id"], **call.as_entry())
        return call

    def _idempotency_key(self, tool_use_id: str) -> str:
        info = self.context.event.delivery
        if info is None:
            return f"{self.context.event.id}:{self.spec.name}:0:{tool_use_id}"
        return f"{info.idempotency_key}:{info.run}:{tool_use_id}"

    def _limit(self) -> str | None:
        """Which limit forbids another model call, counted over the whole run."""
        if self.state.turns + self.record.turns >= self.spec.max_turns:
            return "max_turns"
        if self.state.tokens + self.record.tokens_used() >= self.spec.token_budget:
            return "token_budget"
        return None

    def _write(self, kind: str, **data: Any) -> None:
        if self.journal is not None and not self.journal.append(kind, self.attempt, **data):
            raise JournalFull(kind)


def _not_run(block: dict[str, Any], limit: str) -> ToolCall:
    reason = f"not run: the delivery reached its {limit.replace('_', ' ')} limit"
    return ToolCall(block["name"], block["input"], reason, is_error=True)
