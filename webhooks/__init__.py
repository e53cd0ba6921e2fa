"""The HTTP face: verified webhooks, CloudEvents ingress, the admin API (Flask).

``create_app`` builds the app; ``webhooks.wsgi:app`` is what gunicorn serves.
"""

from webhooks.app import create_app

__all__ = ["create_app"]
