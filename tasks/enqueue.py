"""Putting deliveries on the broker: the lane resolved in our code, the type as routing key."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

from celery import Celery
from kombu import Exchange, Queue, pools
from kombu.transport import virtual

from eda import traces
from eda.event import Event
from eda.flow import PRIORITIES
from eda.lanes import LaneTable

#: The priority of a delivery whose route gives none ("normal"; kombu's Redis transport
#: takes a message without one as the highest).
DEFAULT_PRIORITY = 5
#: How hard a publish tries before the event is left to the outbox sweeper.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}
#: Most broker commands a batch holds before sending them (two per delivery on Redis):
#: small enough that the first deliveries of a burst reach the workers within
#: milliseconds, not after the dispatcher's whole batch.
BATCH_COMMANDS = 100
#: Where a channel keeps the binding tables read for the batch it publishes.
BINDINGS = "eda_bindings"
#: The longest text Celery keeps of a message's arguments (its ``argsrepr_maxsize``).
REPR_MAX = 1024
#: The lowest route priority: routes count like kombu's Redis transport, 0 first.
LOWEST_PRIORITY = max(PRIORITIES.values())


def broker_priority(priority: int, driver_type: str) -> int:
    """A route's priority as the broker reads it: kombu's Redis transport takes the lowest
    number first, AMQP the highest (up to the lanes' ``x-max-priority``)."""
    return LOWEST_PRIORITY - priority if driver_type == "amqp" else priority


def lane_table(app: Celery) -> LaneTable:
    """The lanes ``app``'s configuration declares (``eda_lanes``, ``eda_default_lane``)."""
    return LaneTable(app.conf.eda_lanes, app.conf.eda_default_lane)


@contextlib.contextmanager
def bindings_read_once(channel: Any) -> Iterator[None]:
    """While a batch is published, read each exchange's bindings from the broker once.

    kombu's virtual transports (Redis) route a message to a topic exchange by reading
    the exchange's whole binding table (``Channel.get_table``: an SMEMBERS) for every
    message, outside the publish pipeline: one round trip per delivery, which was 100
    of the 126 round trips of a relay batch of 100 events. Within the batch the table
    is read once, kept on the channel, and forgotten when the batch ends or when
    :meth:`CeleryEnqueuer._bind` adds a binding. A broker without such a table (AMQP
    routes on the server) is left as it is. ``tests/test_relay.py`` counts the round
    trips of a batch, and fails when kombu no longer reads bindings this way.
    """
    if not isinstance(channel, virtual.Channel):
        yield
        return
    read = channel.get_table
    tables: dict[str, Any] = {}

    def table(exchange: str) -> Any:
        if exchange not in tables:
            tables[exchange] = read(exchange)
        return tables[exchange]

    setattr(channel, "get_table", table)  # noqa: B010  (an instance's own, for this batch)
    setattr(channel, BINDINGS, tables)
    try:
        yield
    finally:
        delattr(channel, "get_table")  # the class's method is back
        delattr(channel, BINDINGS)


def forget_bindings(channel: Any) -> None:
    """Forget the binding tables :func:`bindings_read_once` keeps (a binding was added)."""
    tables = getattr(channel, BINDINGS, None)
    if tables is not None:
        tables.clear()


class CeleryEnqueuer:
    """Sends ``eda.deliver`` messages to the lane of each event type."""

    def __init__(self, app: Celery, broker_url: str | None = None) -> None:
        self.app = app
        self.broker_url = broker_url
        self.lanes: LaneTable = lane_table(app)
        self.queues: dict[str, Queue] = {q.name: q for q in app.conf.task_queues}
        self.exchange: Exchange = self.queues[self.lanes.default.name].exchange
        self._bound: set[str] = set()
        self._lock = threading.Lock()
        # Only a key for kombu's pools: it never connects itself.
        self._connection = app.connection_for_write(broker_url) if broker_url else None
        #: ``amqp`` (RabbitMQ) or ``redis``: they read a message's priority the other way round.
        self.driver_type: str = app.connection_for_write(broker_url).transport.driver_type
        #: A delivery's broker priority (the core's, from its route's ``priority``).
        self.priority_of: Callable[[str, str], int] = lambda handler, event_type: DEFAULT_PRIORITY

    def producers(self) -> Any:
        """Producers on long-lived broker connections, shared by this process's threads.

        A connection per publish costs a new Redis client, a queue declaration and
        (redis-py 8) a read of the package's metadata: ten times the publish itself.
        """
        if self._connection is None:
            return self.app.producer_pool
        return pools.producers[self._connection]

    def deliver(
        self,
        event: Event,
        handler: str,
        task_id: str,
        *,
        replay: bool = False,
        flow: dict[str, Any] | None = None,
    ) -> None:
        """Enqueue one delivery (``flow``: what flow control hands it); raises when the broker
        did not take it."""
        with self.producers().acquire(block=True) as producer:
            self._send(producer, event, handler, task_id, replay, flow, None)

    def deliver_many(
        self, deliveries: list[tuple[Event, str, str]], *, replay: bool = False
    ) -> None:
        """Enqueue (event, handler, task id) deliveries in one broker batch (``replay``:
        each marked replayed).

        On Redis the messages (and their task-sent events) go out in one pipeline;
        raises unless the broker took them all, and then some may have been taken.
        Each lane's queue is declared (if this connection has not yet) once a batch,
        not once a message as ``apply_async`` does: that check cost a sixth of the
        CPU of a replayed delivery (0.37 of 2.1 s for 1,000).
        """
        if not deliveries:
            return
        declared: set[str] = set()
        with (
            self.producers().acquire(block=True) as producer,
            bindings_read_once(producer.channel),
            producer.batch(BATCH_COMMANDS),
        ):
            for event, handler, task_id in deliveries:
                self._send(producer, event, handler, task_id, replay, None, declared)

    def _send(
        self,
        producer: Any,
        event: Event,
        handler: str,
        task_id: str,
        replay: bool,
        flow: dict[str, Any] | None,
        declared: set[str] | None,
    ) -> None:
        """Publish one delivery; ``declared``: the lanes this batch has declared (None:
        ``apply_async`` declares the lane itself)."""
        from tasks.delivery import deliver

        lane = self.lanes.resolve(event.type)
        if lane == self.lanes.default.name and event.type not in self._bound:
            self._bind(producer.channel, lane, event.type)
        if declared is not None and lane not in declared:
            if producer.maybe_declare(self.queues[lane]):  # its bindings are new
                forget_bindings(producer.channel)
            declared.add(lane)
        # The event's type: the worker sends only deliveries that have flow control through
        # its gate, and which do depends on the type's routes.
        kwargs: dict[str, Any] = {"event_type": event.type}
        if replay:
            kwargs["replay"] = True
        if flow:
            kwargs["flow"] = flow
        if event.attributes or traces.enabled():
            # The event's trace context ({}: none): the delivery's span needs no read of it.
            kwargs["trace"] = traces.of_event(event)
        # Celery writes the arguments as text for task events and Flower with its saferepr
        # (16 µs for a traced delivery's); these are short strings, flags and small dicts,
        # whose repr is the same text.
        arguments = (event.id, handler)
        described = repr(kwargs)
        deliver.apply_async(
            arguments,
            kwargs,
            argsrepr=repr(arguments),
            kwargsrepr=described if len(described) <= REPR_MAX else None,
            producer=producer,
            queue=self.queues[lane],
            exchange=self.exchange,
            routing_key=event.type,
            declare=None if declared is None else [],
            task_id=task_id,
            retry_policy=PUBLISH_RETRY_POLICY,
            priority=broker_priority(self.priority_of(handler, event.type), self.driver_type),
        )

    def _bind(self, channel: Any, lane: str, event_type: str) -> None:
        """Bind a default-lane type to the default queue, once per process.

        A topic exchange drops a message that matches no binding, and the default
        lane has no pattern of its own: each of its types is bound as it appears.
        """
        self.exchange.bind(channel).declare()
        queue = self.queues[lane].bind(channel)
        queue.declare()
        queue.bind_to(exchange=self.exchange, routing_key=event_type)
        forget_bindings(channel)
        with self._lock:
            self._bound.add(event_type)

    def waiting_task_ids(self) -> set[str] | None:
        """Task ids of the messages waiting in the lanes (Redis broker); None elsewhere.

        On Redis a lane is a list per priority step; each message names its task in
        its headers. RabbitMQ keeps and redelivers unacknowledged messages itself.
        """
        with self.app.connection_for_read(self.broker_url) as connection:
            channel = connection.default_channel
            if not hasattr(channel, "_q_for_pri"):
                return None
            client = channel.client
            pipe = client.pipeline(transaction=False)
            for name in self.queues:
                for priority in channel.priority_steps:
                    pipe.lrange(channel._q_for_pri(name, priority), 0, -1)
            waiting: set[str] = set()
            for messages in pipe.execute():
                for raw in messages:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        waiting.add(str(json.loads(raw)["headers"]["id"]))
            return waiting

    def queue_lengths(self) -> dict[str, int]:
        """Messages waiting in each lane (not counting those a worker has reserved)."""
        lengths = {}
        with self.app.connection_for_read(self.broker_url) as connection:
            channel = connection.default_channel
            for name, queue in self.queues.items():
                try:
                    declared = queue.bind(channel).queue_declare(passive=True)
                    lengths[name] = int(declared.message_count)
                except Exception:  # a lane nobody declared yet holds nothing
                    lengths[name] = 0
                    channel = connection.channel()  # RabbitMQ closed the one that asked
        return lengths
