"""What a measured run costs: the CPU time of the processes that did it, and Redis's side.

CPU is each process's own counters: user + system time of all its threads
(``/proc/<pid>/stat``), read when a :class:`Meter` starts and when it stops, for
the processes it is given and the children they have (gunicorn's workers, a
prefork pool). Redis's side is the server's ``INFO`` counters over the same span:
calls by command (``commandstats``), read events (``total_reads_processed``: one
for each request or pipeline a client sends, so about its round trips) and the
server's own CPU (``used_cpu_user`` + ``used_cpu_sys``), kept apart from the
processes'. The server is the run's one Redis (store and broker): what the suite
sends to watch a run end goes through :func:`look`, which counts it, and a meter
takes that off; its own two ``INFO`` reads it takes off itself.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.services import Process

#: Clock ticks a second, the unit of the times in ``/proc/<pid>/stat``.
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Cost:
    """CPU seconds of the measured processes, and what Redis did meanwhile."""

    cpu: float = 0.0
    redis_cpu: float = 0.0
    round_trips: int = 0
    commands: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.cpu + other.cpu,
            self.redis_cpu + other.redis_cpu,
            self.round_trips + other.round_trips,
            self.commands + other.commands,
        )

    def commands_per(self, units: int) -> dict[str, float]:
        """Calls of each command per unit, most called first (those under 0.001 left out)."""
        per = {name: round(calls / units, 3) for name, calls in self.commands.most_common()}
        return {name: calls for name, calls in per.items() if calls}


#: What the suite itself sent to watch for the end of runs (see :func:`look`).
LOOKS = Cost()


def look(pipe: redis.client.Pipeline) -> list[Any]:
    """Send one of the suite's own pipelines of reads, counted so that a meter leaves it out."""
    LOOKS.round_trips += 1
    LOOKS.commands.update(str(args[0]).lower() for args, _ in pipe.command_stack)
    return pipe.execute()


class Meter:
    """The cost of what runs from its creation to :meth:`stop`.

    ``processes`` are those whose CPU counts (None stands for one not started);
    ``client`` is any client of the run's Redis server.
    """

    def __init__(self, client: redis.Redis, processes: Sequence[Process | None] = ()) -> None:
        self.client = client
        self.processes = [process for process in processes if process is not None]
        self.looks = LOOKS + Cost()
        self.redis = _server(client)
        self.ticks = _ticks(self.processes)

    def stop(self) -> Cost:
        ticks = _ticks(self.processes)
        server = _server(self.client)
        spent = sum(t - self.ticks.get(pid, 0) for pid, t in ticks.items())
        commands = server.commands - self.redis.commands - (LOOKS.commands - self.looks.commands)
        # The first INFO is counted by the second's commandstats, the second's read by its own.
        commands["info"] -= 1
        trips = server.round_trips - self.redis.round_trips - 1
        trips -= LOOKS.round_trips - self.looks.round_trips
        return Cost(spent / TICK, server.redis_cpu - self.redis.redis_cpu, trips, +commands)


def _server(client: redis.Redis) -> Cost:
    """The server's counters so far, as a cost (``cpu`` left 0)."""
    info: dict[str, Any] = client.info("all")
    calls = Counter(
        {
            key.removeprefix("cmdstat_"): int(value["calls"])
            for key, value in info.items()
            if key.startswith("cmdstat_")
        }
    )
    cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return Cost(0.0, cpu, int(info["total_reads_processed"]), calls)


def _ticks(processes: list[Process]) -> dict[int, int]:
    """User + system clock ticks of each process (and its children) by pid."""
    found: dict[int, int] = {}
    for pid in (pid for process in processes for pid in process.pids()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone since it was listed
        found[pid] = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return found
