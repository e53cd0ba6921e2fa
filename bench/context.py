"""What every scenario of a run shares: the processes, the settings, the Redis clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import redis

from bench.cost import Meter, look
from bench.services import Process, Stack
from bench.sizes import Sizes
from eda.core import Core
from eda.settings import Settings, load

#: Seconds to wait for queued work to finish before a run is declared stuck.
DRAIN_TIMEOUT = 180.0
#: Most events one look at their statuses reads, and seconds between looks.
LOOK = 50
LOOK_EVERY = 0.02


@dataclass
class Bench:
    """One run: its stack, sizes and settings, and a note of what it did."""

    stack: Stack
    sizes: Sizes
    notes: dict[str, Any] = field(default_factory=dict)
    #: Variables that turn tracing on (to the run's OTLP sink) for the observed rows.
    observed: dict[str, str] = field(default_factory=dict)

    @cached_property
    def settings(self) -> Settings:
        return load(self.stack.env)

    @cached_property
    def store(self) -> redis.Redis:
        """The event store's database (strings decoded)."""
        return redis.Redis.from_url(self.stack.redis_url, decode_responses=True)

    @cached_property
    def broker(self) -> redis.Redis:
        return redis.Redis.from_url(self.stack.broker_url, decode_responses=True)

    @cached_property
    def core(self) -> Core:
        """The dispatching core, as every face of the project gets it."""
        import tasks

        return tasks.connect(self.settings)

    @cached_property
    def plain_core(self) -> Core:
        """A core without a broker: what it publishes stays pending."""
        return Core(self.settings, self.store)

    def meter(self, *processes: Process | None) -> Meter:
        """The cost, from now, of these processes' CPU and of the run's Redis server."""
        return Meter(self.store, processes)

    def lanes(self) -> tuple[list[str], str]:
        """The broker keys of the project's queues (every lane) and of its reserved messages."""
        import tasks

        prefix = str(tasks.app.conf.broker_transport_options.get("global_keyprefix", ""))
        from tasks.enqueue import lane_table

        names: list[str] = lane_table(tasks.app).names
        return [prefix + name for name in names], prefix + "unacked"

    def reset(self) -> None:
        """Forget every event and every queued message: the next scenario starts from nothing.

        The brokers' exchange bindings stay: publishers remember that they declared
        them, and a message published to a binding that is gone is dropped.
        """
        self.store.flushdb()
        if not self.stack.broker_url.startswith("redis"):
            return  # another broker's queues are drained, not wiped
        doomed = [k for k in self.broker.scan_iter(count=1000) if "_kombu." not in k]
        for start in range(0, len(doomed), 1000):
            self.broker.delete(*doomed[start : start + 1000])


def wait_drained(
    client: redis.Redis, queues: list[str], unacked: str = "unacked", timeout: float = DRAIN_TIMEOUT
) -> float:
    """Wait until the queues and the reserved (unacknowledged) messages are empty.

    Returns the ``perf_counter`` time it first saw them empty. Two looks in a row
    must agree: between a worker's pop and its reservation a message is in neither.
    """

    def waiting() -> int:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        pipe.hlen(unacked)
        return sum(look(pipe))

    return wait_empty(waiting, timeout)


def wait_acknowledged(bench: Bench) -> None:
    """Wait until the project's lanes are empty and no message is left unacknowledged.

    On another broker than Redis, return at once: only Redis's queues are looked at.
    """
    if bench.stack.broker_url.startswith("redis"):
        wait_drained(bench.broker, *bench.lanes())


def wait_empty(waiting: Callable[[], int], timeout: float = DRAIN_TIMEOUT) -> float:
    """The ``perf_counter`` time ``waiting()`` was first 0 in two looks 10 ms apart."""
    deadline = time.perf_counter() + timeout
    empty_since: float | None = None
    while time.perf_counter() < deadline:
        if waiting() == 0:
            if empty_since is not None:
                return empty_since
            empty_since = time.perf_counter()
            time.sleep(0.01)
        else:
            empty_since = None
            time.sleep(0.002)
    raise RuntimeError(f"queued work did not finish within {timeout:g} s")


def wait_settled(
    bench: Bench, event_ids: list[str], status: str = "succeeded", timeout: float = DRAIN_TIMEOUT
) -> float:
    """Wait until every one of these events has ``status``; the ``perf_counter`` time it did.

    Each look reads at most :data:`LOOK` of the events not yet seen there, so that
    watching costs Redis little next to the work watched.
    """
    keys = bench.plain_core.keys
    waiting = list(event_ids)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        pipe = bench.store.pipeline(transaction=False)
        for event_id in waiting[:LOOK]:
            pipe.hget(keys.event(event_id), "status")
        found = look(pipe)
        waiting = [e for e, s in zip(waiting, found, strict=False) if s != status] + waiting[LOOK:]
        if not waiting:
            return time.perf_counter()
        time.sleep(LOOK_EVERY)
    raise RuntimeError(f"the events did not all become {status} within {timeout:g} s")


def memory_in_use(client: redis.Redis) -> int:
    """Bytes Redis holds for data: ``used_memory`` less every client's buffers and the AOF's.

    The clients' memory is each client's own, read with ``used_memory`` in one
    transaction (``CLIENT LIST``'s ``tot-mem``), not ``mem_clients_normal``: Redis
    refreshes that sum in its cron, a few clients a tick, so right after a burst it
    lags the query buffers the burst grew (about 30 KiB on each connection, such as
    the 64 the worker's pool threads hold to the store, kept until it has idled
    2 s), and those counted as data: 550 B an event of a 2,000-event dispatch.
    """
    pipe = client.pipeline(transaction=True)
    pipe.info("memory")
    pipe.client_list()
    info, clients = pipe.execute()
    buffers = sum(int(each.get("tot-mem", 0)) for each in clients)
    return int(info["used_memory"]) - buffers - int(info.get("mem_aof_buffer", 0))
