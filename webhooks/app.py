"""The app factory: the webhook endpoints, CloudEvents, the admin API and health checks.

``create_app()`` with no arguments is what gunicorn serves (``webhooks.wsgi:app``):
it builds the dispatching core with ``tasks.connect()``. Tests pass a core of
their own. Nothing here imports Celery at module level.
"""

from __future__ import annotations

import logging

from flask import Flask

from eda.core import Core
from eda.settings import Settings
from webhooks import admin, answers, cloudevents, health, ingest, metrics
from webhooks.extension import Services, install
from webhooks.mapping import load_type_map
from webhooks.sources import PROVIDERS

log = logging.getLogger(__name__)


def create_app(core: Core | None = None, settings: Settings | None = None) -> Flask:
    """Build the HTTP app around ``core`` (default: ``tasks.connect(settings)``).

    ``settings`` (default: the core's) hold what the app reads at request time: the
    signing secrets, the admin token, the body limit; nothing is read from the
    environment after this.
    """
    if core is None:
        import tasks  # only the production path needs the Celery side

        # The request stores the event; a relay dispatches it.
        core = tasks.connect(settings, defer_dispatch=True)
    settings = settings if settings is not None else core.settings
    app = Flask(__name__)
    # One byte past the limit, so that raw_body can tell a chunked body over it (413).
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook_max_body_bytes + 1
    app.json.sort_keys = False  # type: ignore[attr-defined]
    install(app, Services(core, settings, load_type_map(settings.webhook_types_path)))
    answers.register(app)
    for blueprint in (ingest.blueprint, cloudevents.blueprint, admin.blueprint, health.blueprint):
        app.register_blueprint(blueprint)
    metrics.register(app)
    log_signing(settings)
    return app


def log_signing(settings: Settings) -> None:
    """Say at start which sources are verified and which accept unsigned requests."""
    named = [*PROVIDERS, cloudevents.EVENTS.name]
    unsigned = sorted(name for name in named if name not in settings.webhook_secrets)
    signed = sorted(settings.webhook_secrets)
    log.info("webhook sources with a secret: %s", ", ".join(signed) or "none")
    if settings.events_tokens:
        log.info("CloudEvents senders with a token: %s", ", ".join(sorted(settings.events_tokens)))
    if settings.allow_unsigned:
        log.warning(
            "EDA_ALLOW_UNSIGNED is set (development only): unsigned requests are accepted "
            "from %s and from any other source without EDA_WEBHOOK_SECRET_<SOURCE>",
            ", ".join(unsigned) or "no named source",
        )
    elif unsigned:
        log.warning(
            "no secret is set for %s: their requests are refused (401) until one is",
            ", ".join(unsigned),
        )
    if settings.admin_token is None:
        log.info("the admin API is off: %s is not set", admin.TOKEN_VARIABLE)
