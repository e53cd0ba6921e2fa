"""Every Redis key the project uses, built in one place with the prefix applied once.

Layout (``P`` is the configured prefix)::

    P:stream                    stream of every event: entries {id, type}
    P:stream:<type>             stream of one type: entries {id}
    P:event:<id>                hash: data (event JSON), status, sid (stream id), at;
                                type, source, time (read by history pages, never data)
    P:deliveries:<id>           hash: handler -> delivery JSON (status, attempts, history)
    P:outcomes:<id>             hash: handler -> what the handler reported (JSON)
    P:journal:<id>              hash: the agent runs' journals of the event, fields
                                "<handler>#<run>#<n>" -> entry JSON, "...#n" count, "...#bytes"
    P:chain:<correlation id>    string: events published in one chain (TTL: EDA_DEDUPE_TTL)
    P:dedupe:<key>              string: the event id a dedupe key was first seen with (TTL)
    P:pending                   sorted set: event ids stored but not yet dispatched, by time
    P:dispatch                  list: ids of stored events for the workers' dispatchers
    P:dispatch:wake:<name>      list: a relay told to stop (its wait for P:dispatch ends)
    P:dlq                       sorted set: dead-letter ids by time of death
    P:dlq:<event id>:<handler>  hash-free string: the dead letter's JSON
    P:subscriptions             hash: "<pattern> <handler>" -> subscription JSON
    P:inflight                  sorted set: "<event id> <handler>" of deliveries queued,
                                running or retrying, by the time of their last step (ms)
    P:due                       sorted set: "<event id> <handler>" of deliveries whose retry
                                (or flow-control wait) waits in the store -> when due (ms)
    P:flow:leases:<scope>       sorted set: deliveries holding a concurrency slot -> lease end
    P:flow:parked:<scope>       list: deliveries waiting for a slot (JSON: what wakes them)
    P:flow:scopes               hash: concurrency scopes with slots held or deliveries
                                parked -> limit
    P:flow:rate:<scope>         string: a rate limit's next theoretical arrival time
    P:flow:debounce:<scope>     hash: a debounce key's burst (latest event, first, last)
    P:flow:pauses               sorted set: model -> until when its deliveries wait (epoch s)
    P:flow:budget:<agent>:<day> string: tokens the agent used that day (UTC)
    P:flow:cost:<agent>:<day>   string: what they cost, in USD (EDA_MODEL_PRICES)
    P:destinations:disabled     hash: destination handler -> why it is disabled (JSON: the
                                status that disabled it, when), until an operator enables it
    P:triage:<delivery>#<run>   string: dead letters one triage run retried (TTL one day)
    P:dryrun:<digest>           string: the system prompt and tools of a dry run's request,
                                kept once per agent and version (content-addressed)
    P:alive                     hash: "<kind>:<name>" of a worker or relay -> its heartbeat
                                JSON (when it expires, the task ids it holds)
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

    def dispatch_wake(self, name: str) -> str:
        return f"{self.prefix}:dispatch:wake:{name}"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}:dlq"

    def dead_letter(self, letter_id: str) -> str:
        return f"{self.prefix}:dlq:{letter_id}"

    @property
    def subscriptions(self) -> str:
        return f"{self.prefix}:subscriptions"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}:inflight"

    @property
    def due(self) -> str:
        return f"{self.prefix}:due"

    @property
    def destinations_disabled(self) -> str:
        return f"{self.prefix}:destinations:disabled"

    def triage_retries(self, delivery_id: str, run: int) -> str:
        return f"{self.prefix}:triage:{delivery_id}#{run}"

    @property
    def alive(self) -> str:
        return f"{self.prefix}:alive"

    def flow_leases(self, scope: str) -> str:
        return f"{self.prefix}:flow:leases:{scope}"

    def flow_parked(self, scope: str) -> str:
        return f"{self.prefix}:flow:parked:{scope}"

    @property
    def flow_scopes(self) -> str:
        return f"{self.prefix}:flow:scopes"

    def flow_rate(self, scope: str) -> str:
        return f"{self.prefix}:flow:rate:{scope}"

    def flow_debounce(self, scope: str) -> str:
        return f"{self.prefix}:flow:debounce:{scope}"

    @property
    def flow_pauses(self) -> str:
        return f"{self.prefix}:flow:pauses"

    def flow_budget(self, agent: str, day: str) -> str:
        return f"{self.prefix}:flow:budget:{agent}:{day}"

    def flow_cost(self, agent: str, day: str) -> str:
        return f"{self.prefix}:flow:cost:{agent}:{day}"

    def dry_run_template(self, digest: str) -> str:
        return f"{self.prefix}:dryrun:{digest}"

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
