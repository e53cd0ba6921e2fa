"""Every Redis key the project uses, built in one place with the prefix applied once.

Layout (``P`` is the configured prefix)::

    P:stream                    stream of every event: entries {id, type}
    P:stream:<type>             stream of one type: entries {id}
    P:event:<id>                hash: data (event JSON), status, sid (stream id), at
    P:deliveries:<id>           hash: handler -> delivery JSON (status, attempts, history)
    P:outcomes:<id>             hash: handler -> what the handler reported (JSON)
    P:journal:<id>              hash: the agent runs' journals of the event, fields
                                "<handler>#<run>#<n>" -> entry JSON, "...#n" count, "...#bytes"
    P:chain:<correlation id>    string: events published in one chain (TTL: EDA_DEDUPE_TTL)
    P:dedupe:<key>              string: the event id a dedupe key was first seen with (TTL)
    P:pending                   sorted set: event ids stored but not yet dispatched, by time
    P:dispatch                  list: ids of stored events for the workers' dispatchers
    P:dlq                       sorted set: dead-letter ids by time of death
    P:dlq:<event id>:<handler>  hash-free string: the dead letter's JSON
    P:subscriptions             hash: "<pattern> <handler>" -> subscription JSON
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key builders for one deployment's prefix."""

    prefix: str

    @property
    def stream(self) -> str:
        return f"{self.prefix}:stream"

    def type_stream(self, event_type: str) -> str:
        return f"{self.prefix}:stream:{event_type}"

    def event(self, event_id: str) -> str:
        return f"{self.prefix}:event:{event_id}"

    def deliveries(self, event_id: str) -> str:
        return f"{self.prefix}:deliveries:{event_id}"

    def outcomes(self, event_id: str) -> str:
        return f"{self.prefix}:outcomes:{event_id}"

    def journal(self, event_id: str) -> str:
        return f"{self.prefix}:journal:{event_id}"

    def chain(self, correlation_id: str) -> str:
        return f"{self.prefix}:chain:{correlation_id}"

    def dedupe(self, dedupe_key: str) -> str:
        return f"{self.prefix}:dedupe:{dedupe_key}"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    @property
    def dispatch(self) -> str:
        return f"{self.prefix}:dispatch"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}:dlq"

    def dead_letter(self, letter_id: str) -> str:
        return f"{self.prefix}:dlq:{letter_id}"

    @property
    def subscriptions(self) -> str:
        return f"{self.prefix}:subscriptions"

    @property
    def event_prefix(self) -> str:
        """What every event record key starts with (for the publish script's trimming)."""
        return f"{self.prefix}:event:"

    @property
    def deliveries_prefix(self) -> str:
        return f"{self.prefix}:deliveries:"

    @property
    def outcomes_prefix(self) -> str:
        return f"{self.prefix}:outcomes:"

    @property
    def journal_prefix(self) -> str:
        return f"{self.prefix}:journal:"
