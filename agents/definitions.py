"""Agents declared as data: reading and checking agents.yaml.

::

    defaults:                       # optional; limits every agent gets unless it sets its own
      max_turns: 8                  # model calls per delivery
      max_tokens: 2048              # output tokens per model call
      token_budget: 200000          # input + output tokens (cache included) per delivery
    agents:
      - name: AlertResponder        # the handler name the routes file routes events to
        model: claude-haiku-5-5     # optional; EDA_AGENT_MODEL otherwise
        tools:                      # the allow-list: gantz.yaml tool names and Python tools
          - get_event_history
          - publish_event
          - mypackage.tools:lookup_service     # a PythonTool, by import path
        publishes: [notification.requested, "alert.escalated"]   # what publish_event may
                                    # publish (patterns); none when left out
        pipeline:                   # optional stages before the agent, in order
          - name: high_severity
            filter: {severity: {in: [critical, high]}}   # or an import path to a callable
          - name: recent_alerts
            enrich: agents.enrichers:recent_events
        retry:                      # optional; this agent's retry policy (eda/retry.py)
          max_retries: 2            # the keys of a route's retry:, which narrows this further
        instructions: |
          What this agent is for and how it should act.

Which events reach an agent is said in the routes file alone (``EDA_ROUTES``):
an agent entry with ``events:`` is refused. Every mistake is an InvalidInput
naming the file, the line, the agent and the key, e.g.
``agents/agents.yaml:40: agents[1] (CodeReviewer).tools[2]: no tool 'x' in gantz.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, cast

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import PlainValidator, ValidationInfo, field_validator, model_validator

from agents.pipeline import Stage, StageFunction
from agents.toolbox import AgentTool, PythonTool
from eda.config_file import (
    ConfigModel,
    RetryField,
    given,
    problem,
    read_yaml,
    unique_names,
    validate,
)
from eda.flow import Budget, Concurrency, Debounce, FlowRules, RateLimit
from eda.imports import import_path
from eda.retry import RetryOverride
from eda.routes import Condition, checked_conditions, checked_patterns
from eda.tools import Tool

#: Limits: (smallest, largest, default). Output above 32000 tokens needs streaming.
LIMITS: dict[str, tuple[int, int, int]] = {
    "max_turns": (1, 50, 8),
    "max_tokens": (1, 32_000, 2048),
    "token_budget": (1, 100_000_000, 200_000),
}
#: Agent and stage names: they become handler names and record keys.
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
#: Why ``events:`` is refused on an agent.
ROUTES_ELSEWHERE = (
    "is not read here: an agent's routes belong in the routes file "
    "(EDA_ROUTES, tasks/routes.yaml); route these events to the agent there"
)


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
    stages: tuple[Stage, ...]
    retry: RetryOverride | None = None
    #: Concurrency, rate limit, debounce and daily budget (eda/flow.py).
    flow: FlowRules | None = None
    #: Event-type patterns ``publish_event`` may publish; empty: none.
    publishes: tuple[str, ...] = ()


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise problem(f"{value!r} must be a letter then letters, digits, _ or -")
    return value


def _in_range(value: int | None, info: ValidationInfo) -> int | None:
    low, high, _ = LIMITS[str(info.field_name)]
    if value is not None and not low <= value <= high:
        raise problem(f"must be a whole number from {low} to {high}, not {value!r}")
    return value


class Limits(ConfigModel):
    """The ``defaults:`` of the file: limits every agent gets unless it sets its own."""

    max_turns: int = LIMITS["max_turns"][2]
    max_tokens: int = LIMITS["max_tokens"][2]
    token_budget: int = LIMITS["token_budget"][2]

    _range = field_validator(*LIMITS)(_in_range)


def _filter(value: Any) -> tuple[Condition, ...] | StageFunction:
    if isinstance(value, dict):
        return checked_conditions(value)
    if not isinstance(value, str):
        raise problem("must be conditions or an import path")
    return _function(value)


def _enrich(value: Any) -> StageFunction:
    if not isinstance(value, str):
        raise problem("must be an import path")
    return _function(value)


def _function(path: str) -> StageFunction:
    function = _import_object(path)
    if not callable(function):
        raise problem(f"{path!r} is not callable")
    return cast(StageFunction, function)


class StageEntry(ConfigModel):
    """One stage of an agent's pipeline: a filter or an enricher."""

    name: Annotated[str, PlainValidator(_name)]
    filter: Annotated[tuple[Condition, ...] | StageFunction | None, PlainValidator(_filter)] = None
    enrich: Annotated[StageFunction | None, PlainValidator(_enrich)] = None

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, value: Any) -> Any:
        if isinstance(value, dict) and ("filter" in value) == ("enrich" in value):
            raise problem("a stage has exactly one of 'filter' or 'enrich'")
        return value

    def stage(self) -> Stage:
        if self.enrich is not None:
            return Stage(self.name, "enrich", function=self.enrich)
        if isinstance(self.filter, tuple):
            return Stage(self.name, "filter", conditions=self.filter)
        return Stage(self.name, "filter", function=self.filter)


def _tools(value: Any, info: ValidationInfo) -> dict[str, AgentTool]:
    if not isinstance(value, list):
        raise problem("must be a list of tool names (gantz.yaml) or import paths")
    tools: dict[str, AgentTool] = {}
    for index, item in enumerate(value):
        try:
            by_path = isinstance(item, str) and ":" in item
            tool = _python_tool(item) if by_path else _gantz_tool(item, given(info, "gantz"))
        except ValueError as exc:
            raise problem(str(exc), index) from None
        if tool.name in tools:
            raise problem(f"{tool.name!r} is listed twice", index)
        tools[tool.name] = tool
    return tools


def _python_tool(path: str) -> PythonTool:
    tool = _import_object(path)
    if not isinstance(tool, PythonTool):
        raise ValueError(f"{path!r} is not a PythonTool (declare it with @python_tool)")
    try:
        Draft202012Validator.check_schema(tool.input_schema)
    except SchemaError as exc:
        raise ValueError(f"{path!r} has an invalid input schema: {exc.message}") from None
    if tool.input_schema.get("type") != "object":
        raise ValueError(f"{path!r}: the input schema must be of type 'object'")
    return tool


def _gantz_tool(name: Any, gantz: Callable[[], Mapping[str, Tool]]) -> Tool:
    if not isinstance(name, str):
        raise ValueError(f"{name!r} is not a tool name")
    available = gantz()
    tool = available.get(name)
    if tool is None:
        known = ", ".join(available) or "none"
        raise ValueError(f"no tool {name!r} in gantz.yaml (it has: {known})")
    return tool


class AgentEntry(ConfigModel):
    """One agent of the file."""

    refused: ClassVar[Mapping[str, str]] = {"events": ROUTES_ELSEWHERE}

    name: Annotated[str, PlainValidator(_name)]
    instructions: str = ""
    model: str | None = None
    tools: Annotated[Mapping[str, AgentTool], PlainValidator(_tools)] = {}
    max_turns: int | None = None
    max_tokens: int | None = None
    token_budget: int | None = None
    pipeline: list[StageEntry] = []
    retry: RetryField = None
    concurrency: Concurrency | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    budget: Budget | None = None
    publishes: Annotated[tuple[str, ...], PlainValidator(checked_patterns)] = ()

    _range = field_validator(*LIMITS)(_in_range)

    @field_validator("instructions")
    @classmethod
    def _instructions(cls, value: str) -> str:
        if not value.strip():
            raise problem("is required: what the agent is for")
        return value.strip()

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise problem("must be a model id such as 'claude-sonnet-5-5'")
        return value

    @field_validator("pipeline")
    @classmethod
    def _stage_names(cls, stages: list[StageEntry]) -> list[StageEntry]:
        return unique_names(stages)

    @model_validator(mode="before")
    @classmethod
    def _instructions_required(cls, value: Any) -> Any:
        if isinstance(value, dict) and "instructions" not in value:
            raise problem("is required: what the agent is for", "instructions")
        return value

    def spec(self, defaults: Limits) -> AgentSpec:
        return AgentSpec(
            name=self.name,
            instructions=self.instructions,
            model=self.model,
            tools=self.tools,
            max_turns=self.max_turns or defaults.max_turns,
            max_tokens=self.max_tokens or defaults.max_tokens,
            token_budget=self.token_budget or defaults.token_budget,
            stages=tuple(entry.stage() for entry in self.pipeline),
            retry=self.retry,
            flow=self.flow(),
            publishes=self.publishes,
        )

    def flow(self) -> FlowRules | None:
        """The agent's flow control, applied to each of its deliveries (routes may narrow it)."""
        rules = FlowRules(
            concurrency=self.concurrency,
            rate_limit=self.rate_limit,
            debounce=self.debounce,
            budget=self.budget,
        )
        return None if rules.empty else rules


class AgentsFile(ConfigModel):
    """A whole agents file."""

    defaults: Limits = Limits()
    agents: list[AgentEntry]

    @field_validator("agents")
    @classmethod
    def _names(cls, agents: list[AgentEntry]) -> list[AgentEntry]:
        if not agents:
            raise problem("is required: a list of agents")
        return unique_names(agents)


def load_agents(path: Path, gantz: Callable[[], Mapping[str, Tool]]) -> dict[str, AgentSpec]:
    """Read and check an agents file; the agents by name, in the file's order.

    ``gantz`` returns the tools of gantz.yaml; it is called only when an agent
    names one. Raises InvalidInput naming the file, the line, the agent and the field.
    """
    agents_file = validate(read_yaml(path), AgentsFile, context={"gantz": gantz})
    return {entry.name: entry.spec(agents_file.defaults) for entry in agents_file.agents}


def _import_object(path: str) -> Any:
    """The object at ``package.module:attribute``; ValueError when it cannot be imported."""
    try:
        return import_path(path)
    except ValueError:
        raise
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{path!r} cannot be imported: {exc}") from None
