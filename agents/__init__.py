"""Agents: Claude tool-use loops that run as handlers, declared in agents/agents.yaml.

The composition root (``tasks.connect(settings)``) registers every agent of the
settings' agents file under its name (:func:`register_agents`), so routes and
subscriptions can name ``AlertResponder`` and the others; importing this package
registers nothing. A mistake in the file stops the process with the file, agent
and field at fault.

Modules: ``definitions`` (the file), ``pipeline`` (filters and enrichers),
``loop`` (the Messages API loop), ``toolbox`` (tools, allow-list, validation),
``prompt`` (what the model is told), ``backend`` (the API or the dry run),
``record`` (what the delivery keeps), ``handler`` (an agent as a handler).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from agents.definitions import AgentSpec, load_agents
from agents.handler import agent_handler
from eda.errors import InvalidInput
from eda.settings import Settings, load
from eda.tools import Tool, load_tools


def load_definitions(settings: Settings | None = None) -> dict[str, AgentSpec]:
    """The agents of the configured agents file, checked (gantz.yaml read only when needed)."""
    settings = settings or load()
    current = settings

    def gantz() -> Mapping[str, Tool]:
        return load_tools(current.gantz_path, default_timeout=current.tool_timeout)

    return load_agents(settings.agents_path, functools.cache(gantz))


def register_agents(register: Callable[..., Any], settings: Settings) -> list[str]:
    """Register a handler for every agent under its name, with its retry policy."""
    specs = load_definitions(settings)
    for name, spec in specs.items():
        model = spec.model or settings.agent_model
        _check_priced(spec, model, settings)
        handler = agent_handler(spec, settings)
        register(name, handler, spec.retry, flow=spec.flow, model=model, publishes=spec.publishes)
    return list(specs)


def _check_priced(spec: AgentSpec, model: str, settings: Settings) -> None:
    """A cost budget counts nothing without its model's price: refuse it at start."""
    budget = spec.flow.budget if spec.flow is not None else None
    if budget is None or budget.cost_per_day is None or model in settings.model_prices:
        return
    raise InvalidInput(
        f"{settings.agents_path}: {spec.name}.budget.cost_per_day",
        f"model {model!r} has no price in EDA_MODEL_PRICES",
    )
