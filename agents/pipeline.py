"""Pipeline stages that run before an agent: filters, then enrichers, in declared order.

A filter is payload conditions (as in the routes file: ``severity: {in: [high]}``)
or a callable ``filter(event, context) -> bool``. An enricher is a callable
``enricher(event, context) -> JSON value``; what it returns is kept in
``context.enriched[stage name]`` and reaches the model as data. Enrichers may read
the event history through ``context.core``.

A stage that returns nothing (a filter that says no, an enricher that returns
None) ends the pipeline: it raises :class:`eda.handlers.Skip` with the stage's
name, and the delivery is recorded ``skipped``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agents.context import DeliveryContext
from eda.event import Event
from eda.handlers import Skip
from eda.routes import Condition

#: A stage's callable: the event and the delivery context, to a verdict or data.
StageFunction = Callable[[Event, DeliveryContext], Any]


@dataclass(frozen=True)
class Stage:
    """One step before the agent; ``kind`` is ``filter`` or ``enrich``."""

    name: str
    kind: str
    conditions: tuple[Condition, ...] = ()
    function: StageFunction | None = None

    def run(self, context: DeliveryContext) -> None:
        """Apply the stage to the delivery; raise Skip when it says no or returns nothing."""
        if self.kind == "filter":
            self._filter(context)
        else:
            self._enrich(context)

    def _filter(self, context: DeliveryContext) -> None:
        for condition in self.conditions:
            if not condition.holds(context.event.payload):
                raise Skip(f"condition {condition.describe()} does not hold", stage=self.name)
        if self.function is not None and not self.function(context.event, context):
            raise Skip("the filter said no", stage=self.name)

    def _enrich(self, context: DeliveryContext) -> None:
        assert self.function is not None  # definitions give every enricher a function
        value = self.function(context.event, context)
        if value is None:
            raise Skip("the enricher returned nothing", stage=self.name)
        context.enriched[self.name] = value


def run_pipeline(stages: Iterable[Stage], context: DeliveryContext) -> None:
    """Run every stage in order; the first that says no raises Skip naming itself."""
    for stage in stages:
        stage.run(context)
