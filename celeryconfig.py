"""Celery configuration, from the project's settings (the environment).

Plain lowercase Celery settings, as ``celery -A tasks worker`` expects, plus the
lanes (``eda_lanes``): which queue each event type travels in. Every other
module-level name starts with ``_``, so that ``celery inspect conf`` lists settings
only (Celery leaves such names out); hence no ``from __future__ import annotations``.
"""

from kombu import Exchange as _Exchange
from kombu import Queue as _Queue
from kombu import binding as _binding

from eda.errors import InvalidInput as _InvalidInput
from eda.flow import PRIORITIES as _PRIORITIES
from eda.lanes import LaneTable as _LaneTable
from eda.redis_server import redis_url as _redis_url
from eda.redis_server import sentinel_target as _sentinel_target
from eda.settings import load as _load

_settings = _load()

#: Lanes: queue -> event-type patterns (``alert.*`` covers every ``alert.`` type).
#: Every event type lands in exactly one lane; what no pattern matches goes to
#: ``eda_default_lane``. An overlap between two lanes is an error at start-up.
eda_lanes: dict[str, list[str]] = {
    "alerts": ["alert.*"],
    "code": ["code.*"],
    "customers": ["customer.*"],
    "payments": ["payment.*"],
}
eda_default_lane = "default"
#: The lanes as a table (``tasks.app.conf._lane_table``): resolves a type to its lane.
_lane_table = _LaneTable(eda_lanes, eda_default_lane)

#: The one topic exchange; the routing key of every delivery is the event type.
_events_exchange = _Exchange("events", type="topic", durable=True)

broker_url = _settings.broker_url or _redis_url(_settings)
broker_connection_retry_on_startup = True
# A redis:// broker gets kombu's Redis transport made to survive a broker restart
# (tasks/broker.py, installed by tasks/__init__.py under the redis:// scheme, which the
# URL keeps: Flower picks its broker client for the Broker page and queue lengths by it).
broker_transport_options: dict[str, float | int | str] = {
    "visibility_timeout": _settings.visibility_timeout,
    # How often a worker looks for messages whose worker died (Redis broker): often
    # enough that they come back soon after the visibility timeout has passed.
    "unacked_restore_interval": max(1, min(10, int(_settings.visibility_timeout / 4))),
    "unacked_restore_throttle": 1 if _settings.visibility_timeout < 600 else 10,
}
# A broker behind Sentinel (the event store's, when CELERY_BROKER_URL is unset) is
# reached through kombu's own Sentinel transport, which asks the same sentinels for the
# same primary, and asks again after a failover (tasks/broker.py serves redis:// only).
_sentinel = _sentinel_target(broker_url)
if _sentinel is not None:
    broker_url = _sentinel.broker_url()
    broker_transport_options["master_name"] = _sentinel.service
# On RabbitMQ a publish returns once the broker has the message (publisher confirms):
# an event is recorded queued only when its delivery cannot be lost in flight.
if broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
    broker_transport_options["confirm_publish"] = True
# kombu's global_keyprefix would keep deployments that share a Redis apart, but with
# it task-sent events never reach Flower: such deployments set their own broker
# database instead (CELERY_BROKER_URL=redis://host:6379/N), as the README says.

# A lane's first pattern is also its queue's routing key, which the worker's banner and
# ``inspect active_queues`` show (without one, Celery shows its default, ``default``).
# Lanes are durable classic queues with priorities (RabbitMQ needs x-max-priority for
# them; kombu's Redis transport ignores it): see tasks/enqueue.py and the README.
_lane_arguments = {"x-max-priority": max(_PRIORITIES.values())}
task_queues = [
    _Queue(
        lane.name,
        exchange=_events_exchange,
        routing_key=lane.bindings()[0],
        bindings=[_binding(_events_exchange, routing_key=key) for key in lane.bindings()],
        queue_arguments=_lane_arguments,
    )
    for lane in _lane_table.lanes
] + [
    _Queue(
        eda_default_lane,
        exchange=_events_exchange,
        routing_key=eda_default_lane,
        queue_arguments=_lane_arguments,
    )
]
task_default_queue = eda_default_lane
task_default_exchange = "events"
task_default_exchange_type = "topic"
task_create_missing_queues = False
# Every message carries a priority (kombu's Redis transport runs one without any first):
# routes say high (0), normal (5) or low (9) for their deliveries.
task_default_priority = 5

# Only JSON crosses a process boundary.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"

# Outcomes live in the event store, not in a result backend.
task_ignore_result = True
result_backend = None

# A delivery is acknowledged after it ran; a worker that dies gives it back.
task_acks_late = True
task_reject_on_worker_lost = True
task_soft_time_limit = _settings.task_soft_time_limit
task_time_limit = _settings.task_time_limit
worker_prefetch_multiplier = 1

# Flower sees everything.
worker_send_task_events = True
task_send_sent_event = True
task_track_started = True
# Task events leave in batches of a few milliseconds, not one message per loop turn.
worker_consumer = "tasks.consumer:Consumer"

beat_schedule = {
    "sweep-outbox": {"task": "eda.sweep", "schedule": _settings.sweep_interval},
}
# Dead-letter triage (off by default): on its schedule, and when letters pile up.
if _settings.triage:
    beat_schedule["triage-dead-letters"] = {
        "task": "eda.triage",
        "schedule": _settings.triage_interval,
        "args": ("schedule",),
    }
    if _settings.triage_threshold:
        beat_schedule["triage-pile-up"] = {
            "task": "eda.triage",
            "schedule": _settings.sweep_interval,
            "args": ("pile-up",),
        }
# Beat keeps its schedule in memory: Celery's default scheduler keeps it in a shelve, a
# pickle that beat loads at start (code, for whoever can write the file). The one entry,
# a sweep every few seconds, loses nothing when a restart forgets when it last ran.
# tasks/beat.py logs a broker outage once when it starts and once when it ends.
beat_scheduler = "tasks.beat:Scheduler"

worker_hijack_root_logger = False
timezone = "UTC"
enable_utc = True

# A message not acknowledged within the visibility timeout is delivered again: the
# longest task plus the longest backoff must fit inside it, or work would run twice.
_longest = _settings.task_time_limit + _settings.retry_backoff_max
if _settings.visibility_timeout <= _longest:
    raise _InvalidInput(
        "EDA_VISIBILITY_TIMEOUT",
        f"is {_settings.visibility_timeout:g} s but must exceed the task time limit plus the "
        f"longest backoff ({_settings.task_time_limit:g} + {_settings.retry_backoff_max:g} s)",
    )
