"""The core of event-driven agents: events, the Redis event store, routing,
deliveries, dead letters and replay. Plain Python over redis-py: nothing here
imports Flask, Celery or anthropic.
"""

from eda.errors import InvalidInput, NotFound, PermanentError, StoreUnavailable, TransientError
from eda.event import Event

__all__ = [
    "Event",
    "InvalidInput",
    "NotFound",
    "PermanentError",
    "StoreUnavailable",
    "TransientError",
]
