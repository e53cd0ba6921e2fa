"""The tools one agent may call: their definitions for the model, and the guarded runner.

Two kinds of tool: those of gantz.yaml (a script, run as Gantz runs it, through
:func:`eda.tools.run_tool`) and Python tools (:class:`PythonTool`, a function with
a JSON schema). The project's own gantz.yaml tools (``scripts/*.py``) are called in
process, with the same arguments and the same JSON result as their script
(``scripts.gantz.call_in_process``): a new interpreter per call cost more than
the rest of a delivery. Every call the model asks for goes through
:meth:`Toolbox.call`:

1. a name outside the agent's allow-list is refused (nothing runs);
2. the input is validated against the tool's JSON schema (and, for a gantz.yaml
   tool, against its parameters): invalid input never reaches a script;
3. ``publish_event`` may publish only the types the agent declares (``publishes``),
   and its ``source`` is the agent's name, whatever the model sent; anything else
   is refused like a tool outside the allow-list;
4. the tool runs, with the call's idempotency key (``EDA_IDEMPOTENCY_KEY``); a
   failure of any kind becomes an ``is_error`` result for the model, never a crash
   of the delivery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from agents.context import DeliveryContext
from eda.errors import InvalidInput
from eda.routes import type_matches
from eda.tools import Tool, own_arguments, own_script, prepare, run_tool, validate_arguments

#: Characters of a tool's result sent back to the model.
MAX_RESULT_CHARS = 20_000
#: Characters of a tool's result kept on the delivery record.
MAX_RECORDED_CHARS = 2_000
#: The script of the tool that publishes events (bounded by an agent's ``publishes``).
PUBLISH_SCRIPT = "scripts.publish_event"

#: A Python tool's function: the validated arguments and the delivery, to a JSON value or text.
ToolFunction = Callable[[dict[str, Any], DeliveryContext], Any]


@dataclass(frozen=True)
class PythonTool:
    """A tool implemented in Python; ``input_schema`` is a JSON Schema object."""

    name: str
    description: str
    input_schema: dict[str, Any]
    function: ToolFunction


def python_tool(
    name: str, description: str, input_schema: dict[str, Any]
) -> Callable[[ToolFunction], PythonTool]:
    """Declare a Python tool; agents.yaml names it by import path (``package.module:attribute``)."""

    def declare(function: ToolFunction) -> PythonTool:
        return PythonTool(name, description, input_schema, function)

    return declare


AgentTool = Tool | PythonTool


def trim(text: str, limit: int) -> str:
    """At most ``limit`` characters, saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[... {len(text) - limit} more characters trimmed]"


@dataclass
class ToolCall:
    """One call the model asked for, and what became of it."""

    name: str
    input: Any
    result: str
    is_error: bool
    duration_ms: float = 0.0
    refused: bool = False

    @property
    def outcome(self) -> str:
        """``ok``, ``error`` or ``refused``: what became of the call, in a word."""
        return "refused" if self.refused else "error" if self.is_error else "ok"

    def as_record(self) -> dict[str, Any]:
        """The call as the delivery keeps it (the result trimmed)."""
        return {
            "name": self.name,
            "input": self.input,
            "result": trim(self.result, MAX_RECORDED_CHARS),
            "is_error": self.is_error,
            "duration_ms": round(self.duration_ms, 1),
            "refused": self.refused,
        }

    def as_entry(self) -> dict[str, Any]:
        """The call as the journal keeps it: the result as the model got it."""
        return {
            "name": self.name,
            "input": self.input,
            "result": self.result,
            "is_error": self.is_error,
            "duration_ms": round(self.duration_ms, 1),
            "refused": self.refused,
        }

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> ToolCall:
        """A call back from its journal entry."""
        return cls(
            name=str(entry.get("name", "")),
            input=entry.get("input"),
            result=str(entry.get("result", "")),
            is_error=bool(entry.get("is_error")),
            duration_ms=float(entry.get("duration_ms") or 0.0),
            refused=bool(entry.get("refused")),
        )


def result_block(tool_use_id: str, call: ToolCall | None) -> dict[str, Any]:
    """The ``tool_result`` block answering a tool_use (an error when the call has no result)."""
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": tool_use_id,
        "content": (call.result if call else "") or "(no output)",
    }
    if call is None or call.is_error:
        block["is_error"] = True
    return block


@dataclass
class Toolbox:
    """An agent's allowed tools by name, the event types it may publish, and its name
    (the source of what it publishes)."""

    tools: Mapping[str, AgentTool]
    publishes: tuple[str, ...] = ()
    agent: str = ""
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict)

    def definitions(self) -> list[dict[str, Any]]:
        """The tool definitions of the Messages API, in allow-list order."""
        return [
            {"name": name, "description": tool.description, "input_schema": schema(tool)}
            for name, tool in self.tools.items()
        ]

    def call(self, name: str, arguments: Any, context: DeliveryContext) -> ToolCall:
        """Run one call the model asked for; every failure becomes an error result."""
        started = time.monotonic()
        tool = self.tools.get(name)
        if tool is None:
            allowed = ", ".join(self.tools) or "none"
            reason = f"refused: {name!r} is not a tool this agent may use (allowed: {allowed})"
            return ToolCall(name, arguments, reason, is_error=True, refused=True)
        problem = self.invalid_input(name, tool, arguments)
        if problem is not None:
            return ToolCall(name, arguments, f"invalid input: {problem}", is_error=True)
        if isinstance(tool, Tool) and own_script(tool) == PUBLISH_SCRIPT:
            arguments = {**arguments, "source": self.agent or "agent"}
            refusal = self.refused_type(str(arguments.get("event_type", "")))
            if refusal is not None:
                return ToolCall(name, arguments, refusal, is_error=True, refused=True)
        try:
            result, ok = _run(tool, arguments, context)
        except Exception as exc:  # a tool's failure is the model's to handle, not a crash
            result, ok = f"{type(exc).__name__}: {exc}", False
        elapsed = (time.monotonic() - started) * 1000
        return ToolCall(name, arguments, result, is_error=not ok, duration_ms=elapsed)

    def refused_type(self, event_type: str) -> str | None:
        """Why the agent may not publish this type, or None when its ``publishes`` allows it."""
        if any(type_matches(pattern, event_type) for pattern in self.publishes):
            return None
        allowed = ", ".join(self.publishes) or "none"
        return f"refused: this agent may not publish {event_type!r} (it may publish: {allowed})"

    def invalid_input(self, name: str, tool: AgentTool, arguments: Any) -> str | None:
        """Why the arguments do not fit the tool, or None when they do."""
        if not isinstance(arguments, dict):
            return "the input must be a JSON object"
        validator = self._validators.get(name)
        if validator is None:
            validator = self._validators[name] = Draft202012Validator(schema(tool))
        error = best_match(validator.iter_errors(arguments))
        if error is not None:
            where = error.json_path.removeprefix("$.").removeprefix("$") or "input"
            return f"{where}: {error.message}"
        if isinstance(tool, Tool):
            try:
                validate_arguments(tool, arguments)
            except InvalidInput as exc:
                return str(exc)
        return None


def schema(tool: AgentTool) -> dict[str, Any]:
    """A tool's JSON schema, whichever its kind."""
    return tool.input_schema() if isinstance(tool, Tool) else tool.input_schema


def _run(tool: AgentTool, arguments: dict[str, Any], context: DeliveryContext) -> tuple[str, bool]:
    """The tool's result text and whether it succeeded."""
    if isinstance(tool, PythonTool):
        value = tool.function(dict(arguments), context)
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return trim(text, MAX_RESULT_CHARS), True
    module = own_script(tool)
    if module is not None:
        return _run_own(tool, module, arguments, context)
    limit = context.settings.tool_max_output_bytes
    outcome = run_tool(tool, arguments, env=context.tool_environment(), max_output=limit)
    text = outcome.stdout
    if not outcome.ok:
        status = "timed out" if outcome.timed_out else f"exit code {outcome.exit_code}"
        text = f"{text}\n{outcome.stderr}\n({status})".strip()
    return trim(text, MAX_RESULT_CHARS), outcome.ok


def _run_own(
    tool: Tool, module: str, arguments: dict[str, Any], context: DeliveryContext
) -> tuple[str, bool]:
    """One of the project's own tools, called in process as its script would run."""
    from scripts.gantz import Invocation, call_in_process

    call = prepare(tool, arguments, context.tool_environment())
    invocation = Invocation(
        call.stdin, call.env, context.core, context.publishing_core, context.dispatching_core
    )
    out, err, code = call_in_process(module, own_arguments(tool, call.argv), invocation)
    text = out if code == 0 else f"{out}\n{err}\n(exit code {code})".strip()
    return trim(text, MAX_RESULT_CHARS), code == 0
