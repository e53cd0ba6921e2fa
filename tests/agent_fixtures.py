"""Building agents for the tests from agents.yaml text, as operators declare them.

Import the fixtures into a test module: ``from tests.agent_fixtures import make_agent``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents import load_definitions
from agents.handler import agent_handler
from eda.core import Core
from eda.event import Event
from eda.handlers import Handler
from eda.settings import Settings

#: Instructions every test agent gets unless a test gives its own.
INSTRUCTIONS = "Look into the event with your tools and report what you found."


def write_agents(folder: Path, *agents: dict[str, Any], **top: Any) -> Path:
    """An agents file holding these agents (each gets instructions unless it has some)."""
    entries = [{"instructions": INSTRUCTIONS, **agent} for agent in agents]
    path = folder / f"agents-{len(list(folder.glob('agents-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({**top, "agents": entries}, sort_keys=False))
    return path


@pytest.fixture
def make_agent(tmp_path: Path, make_settings: Callable[..., Settings]) -> Callable[..., Handler]:
    """An agent handler from one agents.yaml entry (name ``Responder`` unless given), with
    its settings' ``settings_overrides``."""

    def make(settings_overrides: dict[str, Any] | None = None, **entry: Any) -> Handler:
        entry.setdefault("name", "Responder")
        path = write_agents(tmp_path, entry)
        settings = make_settings(agents_path=path, **(settings_overrides or {}))
        return agent_handler(load_definitions(settings)[entry["name"]], settings)

    return make


def stored_event(core: Core, event_type: str, payload: Any, **fields: Any) -> Event:
    """Publish an event through the core and read it back as a handler receives it."""
    published = core.publish(event_type, payload, fields.pop("source", "monitoring"), **fields)
    return core.get_event(published.event_id).event


@pytest.fixture
def dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials in the environment: agents run dry, and nothing may be called."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
