"""What a step costs a Redis server, counted by the server itself (``INFO``).

Reads are round trips, or a few more where a large pipeline arrives in several
pieces; calls are commands, those a Lua script runs among them. Counted on a
server of the test's own (the ``own_redis`` fixture), so no worker's polling is in them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis


@dataclass
class Cost:
    """Reads and command calls spent in a ``with cost(...)`` block."""

    reads: int = 0
    calls: dict[str, int] = field(default_factory=dict)

    def of(self, command: str) -> int:
        return self.calls.get(command, 0)


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@contextlib.contextmanager
def cost(client: redis.Redis) -> Iterator[Cost]:
    """Count what the server reads and runs within the block (the counting left out)."""
    spent = Cost()
    reads = int(client.info("stats")["total_reads_processed"])
    calls = _calls(client)
    yield spent
    spent.reads = int(client.info("stats")["total_reads_processed"]) - reads - 2  # the INFOs'
    after = _calls(client)
    spent.calls = {k: v - calls.get(k, 0) for k, v in after.items() if v != calls.get(k, 0)}
    spent.calls.pop("info", None)
