"""A lane of a Redis broker as kombu keeps it: one list per priority step, highest first."""

from __future__ import annotations

import json
from typing import Any

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel

from tasks import app


def lane_keys(lane: str) -> list[str]:
    """The lists of one lane, in the order a worker takes from them."""
    prefix = app.conf.broker_transport_options.get("global_keyprefix", "")
    return [
        f"{prefix}{lane}{Channel.sep}{step}" if step else f"{prefix}{lane}"
        for step in PRIORITY_STEPS
    ]


def lane_messages(broker: redis.Redis, lane: str = "default") -> list[dict[str, Any]]:
    """The messages waiting in a lane, whatever their priority."""
    return [json.loads(raw) for key in lane_keys(lane) for raw in broker.lrange(key, 0, -1)]


def lane_length(broker: redis.Redis, lane: str = "default") -> int:
    return sum(int(broker.llen(key)) for key in lane_keys(lane))
