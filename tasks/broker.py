"""kombu's Redis transport, made to survive a broker that goes away while a worker holds messages.

When the broker's connection breaks, Celery's consumer collects the kombu
connection (``Connection.collect``: its transport loses its client) and then
closes it; closing the channel restores the unacknowledged messages, for
which kombu's channel builds a new connection pool from the transport's
client: ``AttributeError: 'NoneType' object has no attribute 'hostname'``,
which is no connection error, so nothing ignores it, and the worker dies
("Unrecoverable error"). It happened in one Redis restart out of a few under
load (issue 13), with the worker in the middle of reading from the broker.

:class:`Channel` says what that is: a connection error, which closing ignores.
The messages stay in Redis's unacknowledged set, restored after the visibility
timeout; their deliveries are recovered sooner by ``eda.sweep``. No speed is
gained or lost (the transport is kombu's own in everything else; owning its
client per command was measured and dropped: no clear gain).

:func:`install` makes ``redis://`` and ``rediss://`` URLs use it: the broker URL
keeps its scheme, by which Flower picks its broker client. The test
``tests/test_broker.py`` fails when kombu's own channel stops failing this way.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu import transport
from kombu.transport import redis as kombu_redis

#: URL schemes whose transport is :class:`Transport`.
SCHEMES = ("redis", "rediss")


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; a pool asked of a collected connection is a connection error."""

    def _connparams(self, asynchronous: bool = False) -> Any:
        if getattr(self.connection, "client", None) is None:
            raise redis.ConnectionError("the broker connection was closed after an error")
        return super()._connparams(asynchronous)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


def install() -> None:
    """Make the ``redis://`` and ``rediss://`` schemes name :class:`Transport`."""
    for scheme in SCHEMES:
        transport.TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
