"""What gunicorn serves: ``gunicorn webhooks.wsgi:app``.

A setting that does not validate (a short ``EDA_ADMIN_TOKEN``, say) stops start-up
with one line naming the variable: raised as gunicorn's AppImportError, which
gunicorn prints alone and answers by stopping, instead of restarting the worker.
"""

from gunicorn.errors import AppImportError

from eda import logs, metrics, traces
from eda.errors import InvalidInput
from eda.settings import load
from webhooks.app import create_app

try:
    _settings = load()
except InvalidInput as exc:
    raise AppImportError(str(exc)) from None
logs.configure(_settings.log_level, _settings.log_format)
# Before anything imports prometheus_client: gunicorn's workers count into one folder.
metrics.enable(_settings.metrics_folder / "web")
traces.enable(_settings)  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
app = create_app(settings=_settings)
