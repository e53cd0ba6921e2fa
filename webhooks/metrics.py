"""``GET /metrics``: the web's Prometheus metrics, and the counting of webhook answers.

The scrape is behind the admin API's bearer token (``EDA_ADMIN_TOKEN``; off, 403,
without one): it tells who sends what and how much, which is the admin API's to
tell. It sums what every gunicorn worker counted (``eda/metrics.py``) and reads the
store's gauges (relay queue, dead letters held, lane depth) at scrape time.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Request, Response, request

from eda import metrics
from webhooks.admin import require_token
from webhooks.cloudevents import EVENTS
from webhooks.extension import services
from webhooks.sources import PROVIDERS

blueprint = Blueprint("metrics", __name__)
blueprint.before_request(require_token)

#: Blueprints whose answers are webhooks received.
RECEIVING = ("webhooks", "cloudevents")


@blueprint.get("/metrics")
def scrape() -> Response:
    body, content_type = metrics.exposition(services().core)
    return Response(body, content_type=content_type)


def source_label(received: Request | None = None) -> str:
    """The source a request came to, bounded: a name the deployment knows, else ``other``."""
    received = received or request
    if received.blueprint == "cloudevents":
        return EVENTS.name
    name = str((received.view_args or {}).get("name", ""))
    return name if name in PROVIDERS or name in services().settings.webhook_secrets else "other"


def count_webhook(response: Response) -> Response:
    if not metrics.enabled():
        return response
    received: Request = request._get_current_object()  # type: ignore[attr-defined]
    if received.method == "POST" and received.blueprint in RECEIVING:
        metrics.webhook(source_label(received), response.status_code)
    return response


def register(app: Flask) -> None:
    """Count every webhook answer (errors included) and serve ``/metrics``."""
    app.after_request(count_webhook)
    app.register_blueprint(blueprint)
