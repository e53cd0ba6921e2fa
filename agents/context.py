"""What one delivery to an agent carries: the event, the settings, enriched data and the core.

Pipeline stages and Python tools receive it; gantz.yaml tools receive its
:meth:`DeliveryContext.tool_environment` (lineage and the store to act on).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from eda import traces
from eda.core import Core
from eda.event import Event
from eda.settings import Settings

_cores: dict[tuple[str | None, str, str, bool], Core] = {}
_dispatching: dict[tuple[str | None, ...], Core] = {}
_cores_lock = threading.Lock()


def shared_core(settings: Settings, *, defer_dispatch: bool = False) -> Core:
    """One core per store and prefix in this process, so deliveries share a connection pool.

    With ``defer_dispatch`` what it publishes is handed to the relay, as the web does.
    """
    key = (settings.redis_url, settings.prefix, str(settings.data_dir), defer_dispatch)
    with _cores_lock:
        core = _cores.get(key)
        if core is None:
            core = _cores[key] = Core(settings, defer_dispatch=defer_dispatch)
        return core


def dispatching_core(settings: Settings) -> Core:
    """One core per settings in this process that dispatches what it publishes (the
    Celery enqueuer, the settings' routes and handlers): the project's own tools,
    called in process, publish through it as their scripts would."""
    key = (
        settings.redis_url,
        settings.prefix,
        str(settings.data_dir),
        settings.broker_url,
        str(settings.routes_path),
        str(settings.agents_path),
        ",".join(settings.handler_modules),
    )
    with _cores_lock:
        core = _dispatching.get(key)
    if core is None:
        from tasks import connect  # the composition root; tasks import agents lazily too

        built = connect(settings)
        with _cores_lock:
            core = _dispatching.setdefault(key, built)
    return core


@dataclass
class DeliveryContext:
    """The event being handled and what stages and tools may use while handling it.

    ``enriched`` collects what enrichers added, by stage name; it reaches the
    model beside the payload, as data.
    """

    event: Event
    settings: Settings
    enriched: dict[str, Any] = field(default_factory=dict)
    #: The tool call being run: what its side effects are deduplicated on.
    idempotency_key: str | None = None

    @property
    def core(self) -> Core:
        """The core API on the same store (to read history, publish, acknowledge)."""
        return shared_core(self.settings)

    @property
    def publishing_core(self) -> Core:
        """The core the project's own tools publish through: one store write, and the
        relay dispatches (no broker connection in the tool call)."""
        return shared_core(self.settings, defer_dispatch=True)

    def dispatching_core(self) -> Core:
        """The core the project's own tools retry, replay and subscribe through."""
        return dispatching_core(self.settings)

    def lineage(self) -> dict[str, str]:
        """The causation and correlation ids that events published while handling carry."""
        return {
            "EDA_CAUSATION_ID": self.event.id,
            "EDA_CORRELATION_ID": self.event.correlation_id or self.event.id,
        }

    def tool_environment(self) -> dict[str, str]:
        """Variables for a tool's script: the lineage, the call's idempotency key, the
        call's trace context (``TRACEPARENT``, while tracing) and the store this delivery
        acts on."""
        environment = {**self.lineage(), **traces.environment(), "EDA_PREFIX": self.settings.prefix}
        if self.idempotency_key:
            environment["EDA_IDEMPOTENCY_KEY"] = self.idempotency_key
        if self.settings.redis_url:
            environment["REDIS_URL"] = self.settings.redis_url
        return environment
