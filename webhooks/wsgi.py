"""What gunicorn serves: ``gunicorn webhooks.wsgi:app``."""

from eda import logs
from eda.settings import load
from webhooks.app import create_app

_settings = load()
logs.configure(_settings.log_level, _settings.log_format)
app = create_app(settings=_settings)
