"""Who is alive: workers and relays announce themselves, with what they hold, on a short lease.

Each live worker writes a heartbeat every ``EDA_HEARTBEAT_INTERVAL`` seconds:
when it expires (three intervals on) and the task ids it holds (reserved,
waiting for their countdown, or running). A relay beats too. Recovery
(``eda/recovery.py``) trusts a delivery to a process only while its heartbeat
has not expired; a ``kill -9`` stops the heartbeat, and what it held is
recovered within a few intervals, not after the broker's visibility timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from eda.errors import reaching_redis
from eda.keys import Keys

#: Heartbeats a process may miss before it counts as gone.
MISSED = 3
#: Seconds a gone process's heartbeat is kept before it is swept away.
FORGET_AFTER = 24 * 3600


@dataclass(frozen=True)
class Beat:
    """One process's last heartbeat."""

    kind: str
    name: str
    at: float
    expires: float
    held: tuple[str, ...] = ()

    def alive(self, now: float) -> bool:
        return self.expires > now


class Liveness:
    """Heartbeats of one deployment's workers and relays."""

    def __init__(self, client: redis.Redis, keys: Keys, interval: float) -> None:
        self.redis = client
        self.keys = keys
        self.interval = interval

    def beat(self, kind: str, name: str, held: Iterable[str] = ()) -> None:
        """Say that this process is alive, and which task ids it holds."""
        now = time.time()
        beat = {"at": now, "expires": now + MISSED * self.interval, "held": sorted(held)}
        with reaching_redis():
            self.redis.hset(self.keys.alive, f"{kind}:{name}", json.dumps(beat))

    def leave(self, kind: str, name: str) -> None:
        """Say that this process stops (what it holds is no longer its own)."""
        with reaching_redis():
            self.redis.hdel(self.keys.alive, f"{kind}:{name}")

    def beats(self) -> list[Beat]:
        """Every heartbeat kept; those gone for a day are forgotten on the way."""
        with reaching_redis():
            raw: dict[str, str] = self.redis.hgetall(self.keys.alive)  # type: ignore[assignment]
        now, beats, forgotten = time.time(), [], []
        for field, value in raw.items():
            kind, _, name = field.partition(":")
            data = json.loads(value)
            if data["expires"] + FORGET_AFTER < now:
                forgotten.append(field)
                continue
            beats.append(Beat(kind, name, data["at"], data["expires"], tuple(data["held"])))
        if forgotten:
            with reaching_redis():
                self.redis.hdel(self.keys.alive, *forgotten)
        return beats

    def held(self) -> set[str]:
        """The task ids live processes hold."""
        now = time.time()
        return {task for beat in self.beats() if beat.alive(now) for task in beat.held}

    def alive(self, kind: str) -> list[str]:
        """Names of the live processes of one kind (``worker``, ``relay``)."""
        now = time.time()
        return sorted(b.name for b in self.beats() if b.kind == kind and b.alive(now))
