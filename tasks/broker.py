"""kombu's Redis transport, keeping one Redis client per channel.

kombu's Redis channel builds a new ``redis.Redis`` object for every command it
sends outside its consumer loop: each publish, each task event, each reservation
and each acknowledgement. A redis-py 8 client costs about 50 µs to build (it
copies some two hundred response callbacks), and a worker's main thread sends
five such commands per task (three events, the reservation, the ack): a fifth of
its time per delivery. The clients all share the channel's connection pool, and
a client is safe to share between threads, so one per channel does the same work.

``celeryconfig`` selects this transport for ``redis://`` brokers; any other
broker URL keeps kombu's own transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """A kombu Redis channel whose commands share one client (and its pool)."""

    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            # Built on first use, and again when the channel replaced its pool.
            shared = self._shared_client = self._create_client()
        yield shared

    def _disconnect_pools(self) -> None:
        self._shared_client = None
        super()._disconnect_pools()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
