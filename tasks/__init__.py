"""The Celery side: the app, the delivery tasks, and the dispatching core.

``celery -A tasks worker -Q alerts,code,customers,payments,default`` runs a
worker; ``celery -A tasks beat`` runs the outbox sweeper. Every face that
dispatches (web, scripts, CLI, MCP) gets its core from :func:`connect`.
"""

from __future__ import annotations

from celery import Celery, signals

from eda import logs
from eda.core import Core
from eda.routes import RouteTable, load_routes
from eda.settings import Settings, load
from tasks import registry
from tasks.registry import register, register_handler

app = Celery("eda")
app.config_from_object("celeryconfig")


@signals.setup_logging.connect
def _configure_logging(**_: object) -> None:
    """Workers and beat log in the project's structured format, not Celery's own."""
    settings = load()
    logs.configure(settings.log_level, settings.log_format)


def connect(settings: Settings | None = None) -> Core:
    """The core API with the Celery enqueuer and every route loaded.

    Raises InvalidInput when the routes file names an unknown handler, a bad
    pattern or a bad condition (with file, line and reason).
    """
    from tasks.enqueue import CeleryEnqueuer

    settings = settings or load()
    registry.load_modules(settings.handler_modules)
    routes = RouteTable(
        [*registry.code_routes(), *load_routes(settings.routes_path, registry.known)]
    )
    return Core(settings, enqueuer=CeleryEnqueuer(app), routes=routes, known_handler=registry.known)


from tasks import delivery  # noqa: E402,F401  (registers the tasks with the app)

__all__ = ["app", "connect", "register", "register_handler"]
