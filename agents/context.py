"""What one delivery to an agent carries: the event, the settings, enriched data and the core.

Pipeline stages and Python tools receive it; gantz.yaml tools receive its
:meth:`DeliveryContext.tool_environment` (lineage and the store to act on).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from eda.core import Core
from eda.event import Event
from eda.settings import Settings

_cores: dict[tuple[str | None, str, str], Core] = {}
_cores_lock = threading.Lock()


def shared_core(settings: Settings) -> Core:
    """One core per store and prefix in this process, so deliveries share a connection pool."""
    key = (settings.redis_url, settings.prefix, str(settings.data_dir))
    with _cores_lock:
        core = _cores.get(key)
        if core is None:
            core = _cores[key] = Core(settings)
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

    @property
    def core(self) -> Core:
        """The core API on the same store (to read history, publish, acknowledge)."""
        return shared_core(self.settings)

    def lineage(self) -> dict[str, str]:
        """The causation and correlation ids that events published while handling carry."""
        return {
            "EDA_CAUSATION_ID": self.event.id,
            "EDA_CORRELATION_ID": self.event.correlation_id or self.event.id,
        }

    def tool_environment(self) -> dict[str, str]:
        """Variables for a tool's script: the lineage, and the store this delivery acts on."""
        environment = {**self.lineage(), "EDA_PREFIX": self.settings.prefix}
        if self.settings.redis_url:
            environment["REDIS_URL"] = self.settings.redis_url
        return environment
