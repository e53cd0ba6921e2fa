"""The benchmark suite: ``python -m bench [--quick|--smoke] [--json PATH]``.

It measures the system against baselines taken in the same run on the same
machine (a bare Flask endpoint, raw Celery, the ideal of an I/O-bound agent),
because absolute numbers drift from run to run: every figure that matters is
a ratio. It starts everything it measures itself, on loopback, and stops it:
a Redis server, Celery workers, gunicorn and a Messages API server.

Modules: ``sizes`` (what each mode measures), ``procfile`` (the commands the
Procfile runs), ``services`` (the processes), ``context`` (what scenarios share),
``cost`` (CPU and Redis counters around a run), ``http_load`` (the load
generator), ``messages_api`` (the model API stand-in), ``raw_celery`` and
``hello`` (the baselines), ``handlers`` (what the measured deliveries run),
``scenarios/`` (one module per figure), ``figures`` and ``report``.
"""
