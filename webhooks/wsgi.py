"""What gunicorn serves: ``gunicorn webhooks.wsgi:app``."""

import logging

from webhooks.app import create_app

# Under gunicorn, the app's records go where gunicorn's own go, at its --log-level,
# so that the start-up lines (which sources are signed) are seen.
_gunicorn = logging.getLogger("gunicorn.error")
if _gunicorn.handlers:
    logging.getLogger().handlers = list(_gunicorn.handlers)
    logging.getLogger().setLevel(_gunicorn.level)

app = create_app()
