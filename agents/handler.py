"""An agent as a handler: ``handler(event) -> outcome``, what routes and the registry name.

One delivery: the pipeline's stages (which may skip it), then the agent loop on
the backend the environment gives (the Messages API, or the dry run). A new
attempt of a run that already sent its first request resumes from the run's
journal and does not run the pipeline again: its enrichment is in that request.
"""

from __future__ import annotations

from typing import Any

from agents.backend import open_backend
from agents.context import DeliveryContext
from agents.definitions import AgentSpec
from agents.loop import journal_for, run_agent
from agents.pipeline import run_pipeline
from eda.event import Event
from eda.handlers import Handler
from eda.settings import Settings, load


def agent_handler(spec: AgentSpec, settings: Settings | None = None) -> Handler:
    """The handler that runs ``spec`` on each event.

    ``settings`` default to the environment's, read at each delivery.
    """

    def handle(event: Event) -> dict[str, Any]:
        current = settings or load()
        context = DeliveryContext(event, current)
        journal = journal_for(context)
        # Nothing of the run ran before its first attempt's first start: no journal to read.
        fresh = event.delivery is None or event.delivery.first_start
        entries = journal.entries() if journal is not None and not fresh else []
        if not entries:
            run_pipeline(spec.stages, context)
        with open_backend() as backend:
            model = spec.model or current.agent_model
            return run_agent(spec, model, context, backend, journal, entries)

    handle.__name__ = handle.__qualname__ = spec.name
    handle.__doc__ = f"The agent {spec.name} of agents.yaml."
    return handle
