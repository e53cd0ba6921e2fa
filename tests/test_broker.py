"""The broker transport: kombu's, with a collected connection's pool a connection error."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis

from tasks import app
from tasks.broker import Transport
from tests.conftest import RedisServer


def collected_channel(url: str, transport: type) -> Any:
    """A channel as Celery's consumer leaves it after a broker error, before closing it.

    ``Connection.collect`` detached the transport from its connection, and the
    channel's close (which could not finish while the broker was away) dropped its
    pool before restoring the unacknowledged messages, which needs a new one.
    """
    connection = Connection(url, transport=transport)
    channel: Any = connection.default_channel
    channel._disconnect_pools()
    connection._do_close_transport()  # what collect() does last
    return channel


def test_kombus_own_channel_fails_with_no_connection_error_once_collected(
    redis_server: RedisServer,
) -> None:
    # The upstream behaviour tasks/broker.py exists for: when this test fails, kombu fixed
    # it, and tasks/broker.py can go.
    channel = collected_channel(redis_server.url, kombu_redis.Transport)
    with pytest.raises(AttributeError, match="hostname"):
        channel.pool  # noqa: B018 (the property builds the pool)


def test_our_channel_makes_it_a_connection_error_that_closing_ignores(
    redis_server: RedisServer,
) -> None:
    channel = collected_channel(redis_server.url, Transport)
    with pytest.raises(redis.ConnectionError):
        channel.pool  # noqa: B018
    assert isinstance(redis.ConnectionError(), channel.connection_errors)


def test_the_broker_url_keeps_its_redis_scheme_with_our_transport() -> None:
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        assert connection.as_uri().startswith("redis://")
