"""Agents declared as data: reading and checking agents.yaml.

::

    defaults:                       # optional; limits every agent gets unless it sets its own
      max_turns: 8                  # model calls per delivery
      max_tokens: 2048              # output tokens per model call
      token_budget: 200000          # input + output tokens (cache included) per delivery
    agents:
      - name: AlertResponder        # the handler name routes use
        events: [alert.triggered]   # its default routes (patterns as in the routes file)
        model: claude-haiku-5-5     # optional; EDA_AGENT_MODEL otherwise
        tools:                      # the allow-list: gantz.yaml tool names and Python tools
          - get_event_history
          - mypackage.tools:lookup_service     # a PythonTool, by import path
        pipeline:                   # optional stages before the agent, in order
          - name: high_severity
            filter: {severity: {in: [critical, high]}}   # or an import path to a callable
          - name: recent_alerts
            enrich: agents.enrichers:recent_events
        instructions: |
          What this agent is for and how it should act.

Every mistake is an InvalidInput whose field names the file, the agent and the key,
e.g. ``agents/agents.yaml: agents[1] (CodeReviewer).tools[2]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from agents.pipeline import Stage
from agents.toolbox import AgentTool, PythonTool
from eda.errors import InvalidInput
from eda.gantz_yaml import by_name
from eda.imports import import_path
from eda.routes import check_pattern, parse_conditions
from eda.tools import Tool

#: Keys each level of the file may have.
FILE_KEYS = ("defaults", "agents")
AGENT_KEYS = ("name", "instructions", "model", "tools", "max_turns", "max_tokens",
              "token_budget", "events", "pipeline")  # fmt: skip
STAGE_KEYS = ("name", "filter", "enrich")
#: Limits: (smallest, largest, default). Output above 32000 tokens needs streaming.
LIMITS: dict[str, tuple[int, int, int]] = {
    "max_turns": (1, 50, 8),
    "max_tokens": (1, 32_000, 2048),
    "token_budget": (1, 100_000_000, 200_000),
}
#: Agent and stage names: they become handler names and record keys.
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class AgentSpec:
    """One agent as declared; ``model`` None means the project-wide default."""

    name: str
    instructions: str
    model: str | None
    tools: Mapping[str, AgentTool]
    max_turns: int
    max_tokens: int
    token_budget: int
    events: tuple[str, ...]
    stages: tuple[Stage, ...]


def load_agents(path: Path, gantz: Callable[[], Mapping[str, Tool]]) -> dict[str, AgentSpec]:
    """Read and check an agents file; the agents by name, in the file's order.

    ``gantz`` returns the tools of gantz.yaml; it is called only when an agent
    names one. Raises InvalidInput naming the file, the agent and the field.
    """
    where = str(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidInput(where, f"cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(where, f"is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput(where, "must be a mapping with an 'agents' list")
    _check_keys(document, FILE_KEYS, where)
    defaults = _defaults(document.get("defaults"), f"{where}: defaults")
    entries = document.get("agents")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput(f"{where}: agents", "is required: a list of agents")
    return by_name(
        entries, lambda entry, at: _agent(entry, at, defaults, gantz), f"{where}: agents"
    )


def _check_keys(mapping: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(key) for key in mapping if key not in allowed)
    if unknown:
        raise InvalidInput(
            where, f"unknown keys {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )


def _defaults(value: Any, where: str) -> dict[str, int]:
    if value is None:
        return {key: limits[2] for key, limits in LIMITS.items()}
    if not isinstance(value, dict):
        raise InvalidInput(where, "must be a mapping of limits")
    _check_keys(value, tuple(LIMITS), where)
    return {key: _limit(value.get(key, limits[2]), key, f"{where}.{key}")
            for key, limits in LIMITS.items()}  # fmt: skip


def _limit(value: Any, key: str, where: str) -> int:
    low, high, _ = LIMITS[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(where, f"must be a whole number from {low} to {high}, not {value!r}")
    return value


def _agent(
    entry: Any, where: str, defaults: dict[str, int], gantz: Callable[[], Mapping[str, Tool]]
) -> AgentSpec:
    if not isinstance(entry, dict):
        raise InvalidInput(where, "every agent must be a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(
            f"{where}.name", f"{name!r} must be a letter then letters, digits, _ or -"
        )
    where = f"{where} ({name})"
    _check_keys(entry, AGENT_KEYS, where)
    instructions = entry.get("instructions")
    if not isinstance(instructions, str) or not instructions.strip():
        raise InvalidInput(f"{where}.instructions", "is required: what the agent is for")
    model = entry.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidInput(f"{where}.model", "must be a model id such as 'claude-sonnet-5-5'")
    limits = {key: _limit(entry.get(key, defaults[key]), key, f"{where}.{key}") for key in LIMITS}
    return AgentSpec(
        name=name,
        instructions=instructions.strip(),
        model=model,
        tools=_tools(entry.get("tools", []), f"{where}.tools", gantz),
        events=_events(entry.get("events", []), f"{where}.events"),
        stages=_stages(entry.get("pipeline", []), f"{where}.pipeline"),
        **limits,
    )


def _events(value: Any, where: str) -> tuple[str, ...]:
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list):
        raise InvalidInput(where, "must be an event-type pattern or a list of them")
    return tuple(check_pattern(p, f"{where}[{i}]") for i, p in enumerate(patterns))


def _tools(value: Any, where: str, gantz: Callable[[], Mapping[str, Tool]]) -> dict[str, AgentTool]:
    if not isinstance(value, list):
        raise InvalidInput(where, "must be a list of tool names (gantz.yaml) or import paths")
    tools: dict[str, AgentTool] = {}
    for index, item in enumerate(value):
        here = f"{where}[{index}]"
        by_path = isinstance(item, str) and ":" in item
        tool: AgentTool = _python_tool(item, here) if by_path else _gantz_tool(item, here, gantz)
        if tool.name in tools:
            raise InvalidInput(here, f"{tool.name!r} is listed twice")
        tools[tool.name] = tool
    return tools


def _python_tool(path: str, where: str) -> PythonTool:
    tool = import_object(path, where)
    if not isinstance(tool, PythonTool):
        raise InvalidInput(where, f"{path!r} is not a PythonTool (declare it with @python_tool)")
    try:
        Draft202012Validator.check_schema(tool.input_schema)
    except SchemaError as exc:
        raise InvalidInput(where, f"{path!r} has an invalid input schema: {exc.message}") from None
    if tool.input_schema.get("type") != "object":
        raise InvalidInput(where, f"{path!r}: the input schema must be of type 'object'")
    return tool


def _gantz_tool(name: Any, where: str, gantz: Callable[[], Mapping[str, Tool]]) -> Tool:
    if not isinstance(name, str):
        raise InvalidInput(where, f"{name!r} is not a tool name")
    available = gantz()
    tool = available.get(name)
    if tool is None:
        known = ", ".join(available) or "none"
        raise InvalidInput(where, f"no tool {name!r} in gantz.yaml (it has: {known})")
    if tool.http is not None:
        raise InvalidInput(where, f"{name!r} is an http tool; agents run script tools only")
    return tool


def _stages(value: Any, where: str) -> tuple[Stage, ...]:
    if not isinstance(value, list):
        raise InvalidInput(where, "must be a list of stages (filter or enrich)")
    stages: list[Stage] = []
    for index, entry in enumerate(value):
        here = f"{where}[{index}]"
        if not isinstance(entry, dict):
            raise InvalidInput(here, "every stage must be a mapping")
        _check_keys(entry, STAGE_KEYS, here)
        name = entry.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidInput(f"{here}.name", "is required: a letter then letters, digits, _ or -")
        if name in {stage.name for stage in stages}:
            raise InvalidInput(f"{here}.name", f"{name!r} is used twice")
        stages.append(_stage(entry, name, f"{here} ({name})"))
    return tuple(stages)


def _stage(entry: dict[str, Any], name: str, where: str) -> Stage:
    kinds = [kind for kind in ("filter", "enrich") if kind in entry]
    if len(kinds) != 1:
        raise InvalidInput(where, "a stage has exactly one of 'filter' or 'enrich'")
    kind = kinds[0]
    spec = entry[kind]
    if kind == "filter" and isinstance(spec, dict):
        return Stage(name, kind, conditions=parse_conditions(spec, f"{where}.filter"))
    if not isinstance(spec, str):
        expected = "conditions or an import path" if kind == "filter" else "an import path"
        raise InvalidInput(f"{where}.{kind}", f"must be {expected}")
    function = import_object(spec, f"{where}.{kind}")
    if not callable(function):
        raise InvalidInput(f"{where}.{kind}", f"{spec!r} is not callable")
    return Stage(name, kind, function=function)


def import_object(path: str, where: str) -> Any:
    """The object at ``package.module:attribute``; InvalidInput when it cannot be imported."""
    try:
        return import_path(path)
    except ValueError as exc:
        raise InvalidInput(where, str(exc)) from None
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(where, f"{path!r} cannot be imported: {exc}") from None
