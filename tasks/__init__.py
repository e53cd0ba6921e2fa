"""The Celery side: the app, the delivery tasks, and the dispatching core.

``celery -A tasks worker`` runs a worker on every lane ``celeryconfig.py``
declares (``-Q alerts`` narrows it to one); ``celery -A tasks beat`` runs the
outbox sweeper. Every face that dispatches (web, scripts, CLI, MCP) gets its
core from :func:`connect`.
"""

from __future__ import annotations

import logging

from celery import Celery, signals
from click import Option

from eda import logs
from eda.core import Core
from eda.destinations import register_destinations
from eda.handlers import HandlerRegistry, register, register_handler, registry_for
from eda.routes import RouteTable, load_routes
from eda.settings import Settings, load
from tasks import broker

# Redis brokers keep their redis:// URL and get kombu's transport, fixed (tasks/broker.py).
broker.install()
app = Celery("eda")
app.config_from_object("celeryconfig")

# Every worker runs a relay thread unless told not to; named, not imported, so that
# ``python -m tasks.relay`` does not find its module already imported.
app.user_options["worker"].add(
    Option(
        ["--without-relay"],
        is_flag=True,
        default=False,
        help="Leave relaying to the relay process (python -m tasks.relay).",
    )
)
app.steps["worker"].add("tasks.relay:RelayStep")
app.steps["worker"].add("tasks.heartbeat:HeartbeatStep")
app.steps["worker"].add("tasks.metrics:MetricsStep")
app.steps["consumer"].add("tasks.worker:WakeOnSignal")

#: Loggers of a line per task: Celery's per task received and per task finished. The
#: store records each delivery; at a thousand tasks a second these two lines cost a
#: worker a fifth of its throughput. Their warnings and errors still show. (The HTTP
#: clients' per-request lines are held by ``eda.logs.configure``, with the SDKs'.)
PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


@signals.setup_logging.connect
def _configure_logging(**_: object) -> None:
    """Workers and beat log in the project's structured format, not Celery's own."""
    settings = load()
    logs.configure(settings.log_level, settings.log_format)
    for name in PER_TASK_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def handlers(settings: Settings) -> tuple[HandlerRegistry, RouteTable]:
    """The composition root: the handlers and routes of these settings.

    Code registrations of ``EDA_HANDLER_MODULES``, the agents of the settings'
    agents file, then the routes file (whose import paths become trusted names, and
    whose destinations become handlers named ``destination:<name>``).
    Raises InvalidInput naming the file and the entry at fault.
    """
    from agents import register_agents

    registry = registry_for(settings.handler_modules)
    register_agents(registry.register, settings)
    declared = load_routes(
        settings.routes_path, lambda name: registry.known(name, trusted=True), settings
    )
    register_destinations(registry.register, declared, settings)
    registry.trusted.update(route.handler for route in declared if route.destination is None)
    return registry, RouteTable([*registry.code_routes(), *declared])


def connect(settings: Settings | None = None, *, defer_dispatch: bool = False) -> Core:
    """The core API with the Celery enqueuer, the handlers and routes of ``settings``.

    With ``defer_dispatch`` (the web) published events are handed to a relay
    rather than dispatched by the caller (see ``eda/relay.py``).
    Raises InvalidInput when the routes or agents file has a mistake (with file,
    line and reason).
    """
    from tasks.enqueue import CeleryEnqueuer

    settings = settings or load()
    registry, routes = handlers(settings)
    enqueuer = CeleryEnqueuer(app)
    core = Core(
        settings, enqueuer=enqueuer, routes=routes, handlers=registry, defer_dispatch=defer_dispatch
    )
    enqueuer.priority_of = core.priority
    return core


from tasks import delivery, sweep, triage, worker  # noqa: E402,F401  (registers the tasks)

__all__ = ["app", "connect", "register", "register_handler"]
