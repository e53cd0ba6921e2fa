"""kombu's Redis transport: it survives a broker that goes away while a worker holds
messages, and under the worker's event loop it takes, records and acknowledges messages
in steps of one round trip.

**A broker restart.** When the broker's connection breaks, Celery's consumer collects
the kombu connection (``Connection.collect``: its transport loses its client) and then
closes it; closing the channel restores the unacknowledged messages, for which kombu's
channel builds a new connection pool from the transport's client: ``AttributeError:
'NoneType' object has no attribute 'hostname'``, which is no connection error, so
nothing ignores it, and the worker dies ("Unrecoverable error"). It happened in one
Redis restart out of a few under load (issue 13), with the worker in the middle of
reading from the broker. :class:`Channel` says what that is: a connection error, which
closing ignores. The messages stay in Redis's unacknowledged set, restored after the
visibility timeout; their deliveries are recovered sooner by ``eda.sweep``.

**Steps of one round trip.** kombu spends three round trips of the worker's event loop
(its main thread) on each message: ``BRPOP`` takes it, a ``MULTI``/``ZADD``/``HSET``/
``EXEC`` records it as unacknowledged (the hash ``unacked`` and its index
``unacked_index``, which the visibility timeout's restore reads), and a
``MULTI``/``ZREM``/``HDEL``/``EXEC`` forgets it once acknowledged; with the store's
two steps (start, finish) a delivery cost the worker five. Under the event loop,
:class:`Channel` makes these writes in steps, one script each (``take.lua``), at most
one a turn of the loop: a step forgets the messages acknowledged in that turn (before
the loop polls again, so no acknowledgement waits longer than it did), and takes as
many messages as the prefetch limit allows, in kombu's order (priority by priority,
the lanes in turn), each recorded in kombu's layout by the same script: no message is
ever off its list and not recorded, which a BRPOP's reply lost in a broken connection
can be. ``BRPOP`` is still the wait when the lanes are empty; the message it brings is
recorded by a step that takes more with it. Off the event loop (a consumer draining
events, another thread, a global key prefix) the writes are kombu's own.

Measured with the Procfile's worker (``-P threads -c 64``, prefetch 64) on a backlog
of 2,000 no-op deliveries, Redis's ``total_reads_processed`` and the worker's threads'
CPU (``/proc/<pid>/task/*/schedstat``), broker and store on one Redis on loopback:

============================  ==========  =========================  =======
per delivery                  kombu's     kombu's, prefetch x4       steps
============================  ==========  =========================  =======
round trips (worker's side)   5.11        5.10                       2.16
main thread CPU               1,239 µs    1,172 µs                   180 µs
pool threads CPU              1,036 µs    938 µs                     723 µs
deliveries/s                  341         351                        924
============================  ==========  =========================  =======

On a backlog every step takes at least one message, so a delivery costs the worker
three round trips at most, however the turns fall (two and a fraction when a turn
gathers several acknowledgements, as above). kombu's options do not reach it: a
larger prefetch takes as many round trips (above), and ``ack_emulation=False`` (no
record, no acknowledgement) gives up the visibility timeout's restore, so a worker
killed with messages in hand would lose them. Messages that arrive one at a time
still cost five (``BRPOP``; the step recording it; start; finish; the step
forgetting it), as before.

:func:`install` makes ``redis://`` and ``rediss://`` URLs use it: the broker URL keeps
its scheme, by which Flower picks its broker client. ``tests/test_broker.py`` fails when
kombu's own channel stops failing on a restart as above, and when kombu's restore stops
reading the records a step writes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from time import time
from typing import Any

import redis
from kombu import transport
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

#: URL schemes whose transport is :class:`Transport`.
SCHEMES = ("redis", "rediss")
#: The script that acknowledges, records and takes in one step.
TAKE = (Path(__file__).with_name("take.lua")).read_text()
#: Most messages one step takes (when the channel sets no prefetch limit).
MOST_TAKEN = 100


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS whose writes, under the worker's event loop, are the channel's
    steps (:meth:`Channel.settle`): an acknowledgement is forgotten in Redis by the step
    of the same turn of the loop, before it polls again; a message BRPOP took is recorded
    before it is handed on, in a step that also takes more. Anywhere else (no event loop,
    another thread) kombu's own writes are made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Tags acknowledged, not yet forgotten in Redis.
        self.acked: list[str] = []
        #: The tag of the message being handed on that a step recorded.
        self.recorded = ""

    def append(self, message: Any, delivery_tag: str) -> None:
        channel: Channel = self.channel
        if delivery_tag != self.recorded:
            if not channel.deferring():
                return super().append(message, delivery_tag)
            info = message.delivery_info
            channel.record(
                delivery_tag, dumps([message._raw, info["exchange"], info["routing_key"]])
            )
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if not self.channel.deferring():
            return super().ack(delivery_tag)
        self.acked.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> Any:
        self.channel.settle_acks()
        return super().restore_unacked(client)

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        if self.channel is not None and self.channel.connection is not None:
            self.channel.settle_acks()
        return super().restore_unacked_once(stderr)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel: a pool asked of a collected connection is a connection error;
    under the worker's event loop, its broker writes are made in steps (:meth:`settle`)."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._no_ack_queues: set[str] = set()
        #: Messages a step took while BRPOP's was being handed on, handed on next.
        self._taken: list[tuple[str, bytes]] = []
        self._reading = False
        #: The last step found the lanes empty: wait with BRPOP rather than take again.
        self._drained = False
        super().__init__(*args, **kwargs)

    def _connparams(self, asynchronous: bool = False) -> Any:
        if getattr(self.connection, "client", None) is None:
            raise redis.ConnectionError("the broker connection was closed after an error")
        return super()._connparams(asynchronous)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:  # kombu records nothing for them: no step takes from such a channel
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def deferring(self) -> bool:
        """True on the thread of the event loop this channel's transport runs in (with
        kombu's acknowledgement emulation, and no global key prefix, which the script
        does not apply)."""
        cycle = getattr(self.connection, "cycle", None)
        return (
            isinstance(cycle, Poller)
            and cycle.loop_thread == threading.get_ident()
            and self.ack_emulation
            and not self.global_keyprefix
        )

    def record(self, tag: str, record: str) -> None:
        """Record a message BRPOP took as unacknowledged; while it is handed on, take more
        in the same step (the prefetch limit less this one), handed on after it."""
        wanted = self._wanted() - 1 if self._reading and self._may_take() else 0
        self._taken += self.settle([(tag, record)], wanted)

    def settle(
        self, held: Sequence[tuple[str, str]] = (), wanted: int = 0
    ) -> list[tuple[str, bytes]]:
        """One step (``take.lua``): forget the acknowledged, record ``held`` (tag, record)
        as unacknowledged, and take up to ``wanted`` messages, recorded; what it took."""
        qos: QoS = self.qos
        acked, qos.acked = qos.acked, []
        keys: list[str] = []
        width = 0
        if wanted > 0:
            queues = self._queue_cycle.consume(len(self.active_queues))
            width = len(queues)
            keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        if not (acked or held or keys):
            return []
        with self.conn_or_acquire() as client:
            reply = self._take(
                keys=[self.unacked_key, self.unacked_index_key, *keys],
                args=[time(), wanted, width, len(acked), *acked, *(x for p in held for x in p)],
                client=client,
            )
        taken = [(bytes_to_str(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]
        if keys:
            self._drained = len(taken) < wanted
        return taken

    def settle_acks(self) -> None:
        """Forget the acknowledged now (the channel closes); a broker that is away leaves
        them to the visibility timeout, as kombu's own acknowledgement would."""
        if self.qos.acked:
            with contextlib.suppress(*self.connection_errors):
                self.settle()

    def step(self) -> None:
        """This turn's step: the acknowledgements, and messages taken while the prefetch
        limit allows, no BRPOP waits, and the last step did not find the lanes empty."""
        if not self.deferring():
            return
        idle = not (self._in_poll or self._drained)
        wanted = self._wanted() if idle and self._may_take() else 0
        self._hand_on(self.settle(wanted=wanted))

    def _may_take(self) -> bool:
        """Lanes to take from, none consumed without acknowledgements, and not closing
        (kombu reads a BRPOP's last reply as it closes: that message alone is handed on)."""
        queues = self.active_queues
        return bool(queues) and not self._closing and not self._no_ack_queues.intersection(queues)

    def _wanted(self) -> int:
        estimate = self.qos.can_consume_max_estimate()
        return MOST_TAKEN if estimate is None else min(estimate, MOST_TAKEN)

    def _brpop_read(self, **options: Any) -> Any:
        self._reading = True
        try:
            return super()._brpop_read(**options)
        finally:
            self._reading = False
            taken, self._taken = self._taken, []
            self._hand_on(taken)

    def _hand_on(self, taken: list[tuple[str, bytes]]) -> None:
        """Hand messages a step took and recorded to their consumers, as BRPOP's are."""
        qos: QoS = self.qos
        for key, raw in taken:
            queue = key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            payload = loads(bytes_to_str(raw))
            qos.recorded = payload["properties"]["delivery_tag"]
            try:
                self.connection._deliver(payload, queue)
            finally:
                qos.recorded = ""

    @cached_property
    def _take(self) -> Any:
        return self._create_client().register_script(TAKE)


class Poller(kombu_redis.MultiChannelPoller):
    """kombu's poller; under an event loop, each channel's step before each poll."""

    #: The thread of the event loop this poller serves (None: none, kombu's own path).
    loop_thread: int | None = None

    def on_poll_start(self) -> None:
        if self.loop_thread == threading.get_ident() and not self._in_protected_read:
            for channel in list(self._channels):
                channel.step()
        super().on_poll_start()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel` and :class:`Poller`."""

    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle: Poller = Poller()  # type: ignore[assignment]

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self.cycle.loop_thread = threading.get_ident()
        super().register_with_event_loop(connection, loop)


def install() -> None:
    """Make the ``redis://`` and ``rediss://`` schemes name :class:`Transport`."""
    for scheme in SCHEMES:
        transport.TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
