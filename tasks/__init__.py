"""The Celery side: the app, the delivery tasks, and the dispatching core.

``celery -A tasks worker -Q alerts,code,customers,payments,default`` runs a
worker; ``celery -A tasks beat`` runs the outbox sweeper. Every face that
dispatches (web, scripts, CLI, MCP) gets its core from :func:`connect`.
"""

from __future__ import annotations

import logging

from celery import Celery, signals

from eda import logs
from eda.core import Core
from eda.routes import RouteTable, load_routes
from eda.settings import Settings, load
from tasks import registry
from tasks.registry import register, register_handler

app = Celery("eda")
app.config_from_object("celeryconfig")

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


def connect(settings: Settings | None = None, *, defer_dispatch: bool = False) -> Core:
    """The core API with the Celery enqueuer and every route loaded.

    With ``defer_dispatch`` (the web) published events are handed to the workers'
    dispatchers rather than dispatched by the caller (see ``eda/dispatcher.py``).
    Raises InvalidInput when the routes file names an unknown handler, a bad
    pattern or a bad condition (with file, line and reason).
    """
    from tasks.enqueue import CeleryEnqueuer

    settings = settings or load()
    registry.load_modules(settings.handler_modules)
    routes = RouteTable(
        [*registry.code_routes(), *load_routes(settings.routes_path, registry.known)]
    )
    return Core(settings, enqueuer=CeleryEnqueuer(app), routes=routes,
                known_handler=registry.known, defer_dispatch=defer_dispatch)  # fmt: skip


from tasks import delivery, dispatcher  # noqa: E402,F401  (registers the tasks and the dispatcher)

__all__ = ["app", "connect", "register", "register_handler"]
