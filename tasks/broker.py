"""kombu's Redis transport: it survives a broker that goes away while a worker holds
messages, and under the worker's event loop it takes, records and acknowledges messages
in steps of one round trip, written with the next ``BRPOP`` when the lanes are empty.

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
:class:`Channel` makes these writes in steps, one script each (``fetch.lua``), at most
one a turn of the loop: a step forgets the messages acknowledged so far, and takes as
many messages as the prefetch limit allows, in kombu's order (priority by priority,
the lanes in turn), each recorded in kombu's layout by the same script: no message is
ever off its list and not recorded, which a BRPOP's reply lost in a broken connection
can be. Off the event loop (a consumer draining events, another thread, a global key
prefix) the writes are kombu's own.

**A step written with the next BRPOP.** ``BRPOP`` is still the wait when the lanes are
empty, and what it brings must be recorded before it is handed on; the acknowledgement
of a message that arrived alone finds no step to join either, the loop waiting in its
next ``BRPOP``. Each was a round trip of its own: a lone message cost five (``BRPOP``;
the step recording it; start; finish; the step forgetting it). Commands written at
once on one connection are one round trip (one read for Redis), and a ``BRPOP`` can
follow a script: so when ``BRPOP`` brings a message, the step that records it (with
the acknowledgements, and as many more as the prefetch limit allows less one, for the
lanes may hold more) and the next ``BRPOP`` go in one write on the BRPOP connection,
and the message is handed on once the step's reply is read (:meth:`Channel._brpop_read`).
Acknowledgements made while a ``BRPOP`` waits wait for its reply, to go with the next
write on its connection: the step of the next message, or, when its timeout (kombu's
one second) ends it, the step written before the next ``BRPOP``
(:meth:`Channel._brpop_start`), in place of the idle loop's own ``BRPOP``. A lone
message costs three: the step and ``BRPOP`` in one write, start, finish. The price:
an idle worker forgets its last acknowledgements in Redis up to a second later
(``ACK_WAIT``: a longer ``BRPOP`` timeout leaves them to a step of their own, as
before); a message whose record outlived its visibility timeout in that second is
delivered again, and the store refuses to start a delivery that succeeded. The visibility
timeout's restore is unchanged: every message is recorded before it is handed on, by
the step that took it or the one written after its ``BRPOP``. A ``BRPOP`` that
answers at once (the lanes held more) may have its reply read into redis-py's parser
with the step's, where the poller cannot see it: the loop reads it then
(:meth:`Channel._brpop_read`, :meth:`Channel.after_poll_start`). With a prefetch limit
of one there is no room for a ``BRPOP`` behind the record: four round trips. The
other ways were worse: ``BLMOVE`` into a list of the worker's own is one round trip
without Lua, but kombu's restore does not read such lists, so a worker killed with
``kill -9`` would lose what it held; and the acknowledgement cannot go with the store's
finish, which may be on another server.

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
killed with messages in hand would lose them.

Messages sent one at a time to an idle Procfile worker (each when the last has
succeeded; 200 of them, two runs each), counted by ``total_reads_processed`` less the
counting's own reads, the task events and any ``BRPOP`` that timed out: 5.03 round
trips a delivery before, 3.02 now (kombu's housekeeping is the fraction; without it,
as ``tests/test_broker.py`` counts, 5.00 and 3.00); the main thread's CPU 1,250 µs a
delivery before, 920 µs now, all threads' 2,050 µs and 1,820 µs.

:func:`install` makes ``redis://`` and ``rediss://`` URLs use it: the broker URL keeps
its scheme, by which Flower picks its broker client. ``tests/test_broker.py`` fails when
kombu's own channel stops failing on a restart as above, and when kombu's restore stops
reading the records a step writes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from time import monotonic, time
from typing import Any

import redis
from kombu import transport
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

#: URL schemes whose transport is :class:`Transport`.
SCHEMES = ("redis", "rediss")
#: The script that acknowledges, records and takes in one step.
FETCH = (Path(__file__).with_name("fetch.lua")).read_text()
#: Most messages one step takes (when the channel sets no prefetch limit).
MOST_TAKEN = 100
#: Longest BRPOP (its timeout, seconds; kombu's is 1) for whose reply acknowledgements wait.
ACK_WAIT = 1.0


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS whose writes, under the worker's event loop, are the channel's
    steps (:meth:`Channel.settle`): an acknowledgement is forgotten in Redis by the next
    step, a message is recorded by the step that took it (or that went with the BRPOP
    after the one that brought it) before it is handed on. Anywhere else (no event loop,
    another thread) kombu's own writes are made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Tags acknowledged, not yet forgotten in Redis.
        self.acked: list[str] = []
        #: The tag of the message being handed on that a step recorded.
        self.recorded = ""

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag != self.recorded:
            return super().append(message, delivery_tag)
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
    #: kombu's: the connection whose BRPOP is pending (a falsy value: none), and when
    #: that BRPOP was sent.
    _in_poll: Any = False
    _brpop_sent_at: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._no_ack_queues: set[str] = set()
        #: The last step found the lanes empty: wait with BRPOP rather than take again.
        self._drained = False
        #: :meth:`_brpop_start` wrote the pending BRPOP behind a step: its reply may have
        #: come with the step's, into the parser, where the poller cannot see it.
        self._behind = False
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
            and not cycle._in_protected_read
            and self.ack_emulation
            and not self.global_keyprefix
        )

    def settle(
        self, wanted: int = 0, took: Sequence[bytes] = (), brpop: bool = False
    ) -> list[tuple[str, bytes]]:
        """One step (``fetch.lua``): forget the acknowledged, record the messages BRPOP
        ``took`` as unacknowledged, and take up to ``wanted`` messages, recorded; what it
        took. With ``brpop``, the step is written with the next BRPOP (:meth:`_with_brpop`)."""
        qos: QoS = self.qos
        queues = self._queue_cycle.consume(len(self.active_queues)) if wanted > 0 or brpop else []
        lanes = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        if not (qos.acked or took or (wanted > 0 and lanes) or brpop):
            return []
        acked, qos.acked = qos.acked, []
        keys = [self.unacked_key, self.unacked_index_key, *(lanes if wanted > 0 else ())]
        args = [time(), wanted, len(queues), len(acked), *acked, *took]
        if brpop:
            reply = self._with_brpop(keys, args, lanes)
        else:
            with self.conn_or_acquire() as client:
                reply = self._take(keys=keys, args=args, client=client)
        taken = [(bytes_to_str(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]
        if wanted > 0 and lanes:
            self._drained = len(taken) < wanted
        return taken

    def _with_brpop(self, keys: list[str], args: list[Any], lanes: list[str]) -> Any:
        """The step and the next BRPOP in one write on the BRPOP connection; the step's
        reply (the BRPOP's is the poller's to read, or :meth:`_brpop_read`'s when it came
        with the step's)."""
        client = self.client
        connection = client.connection
        self._in_poll = connection
        self._brpop_sent_at = monotonic()
        commands = [
            ("EVALSHA", self._take.sha, len(keys), *keys, *args),
            ("BRPOP", *lanes, self.brpop_timeout or 0),
        ]
        try:
            connection.send_packed_command([b"".join(connection.pack_commands(commands))])
            return client.parse_response(connection, "EVALSHA")
        except redis.exceptions.NoScriptError:  # a new or restarted server: load it, once
            with self.conn_or_acquire() as other:
                return self._take(keys=keys, args=args, client=other)
        except self.connection_errors:
            connection.disconnect()
            raise

    def close(self) -> None:
        """kombu's close, which reads a pending BRPOP's reply (a message it brought must
        be recorded): the BRPOP is ended first (:meth:`_unblock`), so a worker stops at
        once rather than when the BRPOP's timeout ends (up to a second)."""
        if self._in_poll and not self._closing:
            self._unblock(self._in_poll)
        super().close()

    def _unblock(self, connection: Any) -> None:
        """``CLIENT UNBLOCK`` the connection waiting in BRPOP, found by its address in
        ``CLIENT LIST``: BRPOP answers at once, with nothing or with the message it took.
        Where the server refuses these commands (an ACL), the BRPOP ends by its timeout."""
        sock = getattr(connection, "_sock", None)
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        with contextlib.suppress(redis.RedisError, OSError, ValueError):
            host, port = sock.getsockname()[:2]
            with self.conn_or_acquire() as client:
                for entry in client.client_list():
                    if entry.get("addr") in (f"{host}:{port}", f"[{host}]:{port}"):
                        client.client_unblock(int(entry["id"]))
                        return

    def settle_acks(self) -> None:
        """Forget the acknowledged now (the channel closes); a broker that is away leaves
        them to the visibility timeout, as kombu's own acknowledgement would."""
        if self.qos.acked:
            with contextlib.suppress(*self.connection_errors):
                self.settle()

    def step(self) -> None:
        """This turn's step: take while the prefetch limit allows and the last step did not
        find the lanes empty, with the acknowledgements; these wait for the BRPOP's reply
        (see :meth:`_acks_wait`) when one is pending or about to be sent."""
        if not self.deferring():
            return
        if self._in_poll:
            if self.qos.acked and not self._acks_wait():
                self.settle()
        elif not self._drained and self._may_take():
            self._hand_on(self.settle(wanted=self._wanted()))
        elif self.qos.acked and not (self._acks_wait() and self._brpop_follows()):
            self.settle()

    def after_poll_start(self) -> None:
        """Read a BRPOP reply that came with the step :meth:`_brpop_start` wrote (in the
        parser already, where the poller cannot see it)."""
        if self._behind:
            self._behind = False
            if self._in_poll and self._in_poll.can_read(timeout=0):
                with contextlib.suppress(kombu_redis.Empty):
                    self._brpop_read()

    def _acks_wait(self) -> bool:
        """Acknowledgements wait for the pending BRPOP's reply, to go with the next write on
        its connection (a message or the timeout, at most ACK_WAIT seconds away)."""
        return bool(self.brpop_timeout) and self.brpop_timeout <= ACK_WAIT

    def _brpop_follows(self) -> bool:
        """kombu's poller sends a BRPOP this turn (:meth:`_brpop_start`)."""
        return self._may_take() and self.qos.can_consume()

    def _may_take(self) -> bool:
        """Lanes to take from, none consumed without acknowledgements, and not closing
        (kombu reads a BRPOP's last reply as it closes: that message alone is handed on)."""
        queues = self.active_queues
        return bool(queues) and not self._closing and not self._no_ack_queues.intersection(queues)

    def _wanted(self) -> int:
        estimate = self.qos.can_consume_max_estimate()
        return MOST_TAKEN if estimate is None else min(estimate, MOST_TAKEN)

    def _reauth_pending(self) -> bool:
        """kombu (5.6 on) holds a new credential for the BRPOP connection until it is idle."""
        pending = getattr(self, "_pending_reauth_token", None)
        return pending is not None and pending(self.client.connection) is not None

    def _brpop_start(self, timeout: Any = None) -> None:
        if self.qos.acked and self.deferring() and self._acks_wait() and self._may_take():
            self.settle(brpop=True)
            self._behind = True
        else:
            super()._brpop_start(timeout)

    def _brpop_read(self, **options: Any) -> Any:
        """BRPOP's message, recorded by a step written with the next BRPOP (while the
        prefetch limit allows one more; with the acknowledgements, and messages taken if
        the lanes hold more) before it is handed on; the next reply at once if it came
        with the step's."""
        if not (self.deferring() and self._may_take()):
            return super()._brpop_read(**options)
        connection = self.client.connection
        while True:
            try:
                reply = self.client.parse_response(connection, "BRPOP", **options)
            except self.connection_errors:
                connection.disconnect()
                raise
            finally:
                self._in_poll = None
            if not reply:
                self._drained = True
                self._flush_brpop_reauth()
                raise kombu_redis.Empty()
            key, raw = bytes_to_str(reply[0]), reply[1]
            payload = loads(bytes_to_str(raw))
            room = self._wanted() - 1  # after this one
            brpop = room > 0 and not self._reauth_pending()
            taken = self.settle(room - 1 if brpop else room, [raw], brpop=brpop)
            try:
                self._deliver_recorded(key, payload)
            finally:
                self._hand_on(taken)
            if not brpop:
                self._flush_brpop_reauth()
                return True
            if not (self._in_poll is connection and connection.can_read(timeout=0)):
                return True
            if not (self.deferring() and self._may_take()):
                return super()._brpop_read(**options)

    def _hand_on(self, taken: list[tuple[str, bytes]]) -> None:
        """Hand messages a step took and recorded to their consumers, as BRPOP's are."""
        for key, raw in taken:
            self._deliver_recorded(key, loads(bytes_to_str(raw)))

    def _deliver_recorded(self, key: str, payload: Any) -> None:
        qos: QoS = self.qos
        queue = key.rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        qos.recorded = payload["properties"]["delivery_tag"]
        try:
            self.connection._deliver(payload, queue)
        finally:
            qos.recorded = ""

    @cached_property
    def _take(self) -> Any:
        return self._create_client().register_script(FETCH)


class Poller(kombu_redis.MultiChannelPoller):
    """kombu's poller; under an event loop, each channel's step before each poll."""

    #: The thread of the event loop this poller serves (None: none, kombu's own path).
    loop_thread: int | None = None

    def on_poll_start(self) -> None:
        ours = self.loop_thread == threading.get_ident() and not self._in_protected_read
        if ours:
            for channel in list(self._channels):
                channel.step()
        super().on_poll_start()
        if ours:
            for channel in list(self._channels):
                channel.after_poll_start()


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
