"""Instructions per webhook, counted by callgrind: ours against the ingest baselines.

``python -m bench.instructions [--requests N] [APP ...]`` starts a Redis server and,
for each app (``hello``, ``stored``, ``web``, ``web-traced``), runs a child process
under ``valgrind --tool=callgrind`` twice: once sending N signed webhooks through
the app, once 2N. The difference over N is what one webhook costs the process,
start-up cancelled out. Counting instructions, not time, gives the same figure on
a busy machine as on an idle one.

The child is the web as gunicorn's gevent worker runs it (``gevent.monkey`` patched,
the app called as WSGI with the environ gunicorn builds), less the HTTP parsing,
which is the same for every app. Each webhook is a Standard Webhooks delivery of
the bench's size, signed with a fresh ``webhook-id``; every one must be answered 202.
``web-traced`` exports its spans to an OTLP sink in another process, flushed at the
end, so the export's encoding is counted too.

``delivery``, ``delivery-sampled`` and ``delivery-traced`` count a no-op delivery the
same way, in one process without Celery's worker: the events (each with a sender's
``traceparent``) handed to the relay, its batches (``Relay.dispatch_batch``) sending
their messages, then each message taken off the broker and run through
``eda.delivery.run_attempt`` as the task would. ``delivery-traced`` traces to the sink,
every trace kept, and counts its metrics in memory, as the Procfile's worker with a
metrics port does. ``delivery-sampled`` is the same with the bench's sampled rows'
sampler (``bench.scenarios.common.SAMPLED``: one trace in ten, the parent's choice
first), its events' senders having sampled one trace in ten (every tenth event's
``traceparent`` is marked sampled): nine deliveries in ten make spans that record
nothing.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import hmac
import io
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.procfile import ROOT, WEB_APP
from bench.services import SOURCE

#: The WSGI app each name stands for.
APPS = {
    "hello": "bench.hello:app",
    "stored": "bench.hello:stored",
    "web": WEB_APP,
    "web-traced": WEB_APP,
}
#: What ``delivery`` runs count, against the apps' webhooks.
DELIVERIES = ("delivery", "delivery-sampled", "delivery-traced")
#: The trace context a delivery's event came with (a sender's).
SENDER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#: ``delivery-sampled``'s senders sample one trace in ten.
SAMPLED_EVERY = 10
#: The bench's agents, which its routes name.
BENCH_AGENTS = {"EDA_AGENTS": str(ROOT / "bench" / "agents.yaml"), "EDA_HANDLER_MODULES": "agents"}
#: The apps that trace (to the sink).
TRACED = ("web-traced", "delivery-sampled", "delivery-traced")
#: Webhooks sent before those counted, in every run alike.
WARMUP = 20
PAYLOAD_BYTES = 1024


def traced(url: str) -> dict[str, str]:
    """Traces to the sink at ``url``, exported at the flush alone (or each 512 spans, as the
    batch processor does under load): its 5 s timer would otherwise export a handful of
    spans at a time over a run slowed fifty-fold by callgrind, each a whole HTTP request."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_BSP_SCHEDULE_DELAY": "3600000"}


_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def requests(secret: str, count: int) -> list[tuple[dict[str, str], bytes]]:
    """``count`` signed deliveries: (headers as WSGI names them, body)."""
    body = payload_of_size()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    made = []
    for _ in range(count):
        message_id, stamp = "msg_" + os.urandom(12).hex(), str(int(time.time()))
        signature = hmac.new(key, f"{message_id}.{stamp}.".encode() + body, hashlib.sha256)
        headers = {
            "HTTP_WEBHOOK_ID": message_id,
            "HTTP_WEBHOOK_TIMESTAMP": stamp,
            "HTTP_WEBHOOK_SIGNATURE": "v1," + base64.b64encode(signature.digest()).decode(),
        }
        made.append((headers, body))
    return made


def environ(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The WSGI environ gunicorn gives a POST to ``/webhooks/<source>``."""
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": f"/webhooks/{SOURCE}",
        "RAW_URI": f"/webhooks/{SOURCE}",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "gunicorn",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1",
        **headers,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }


def relay_and_run(name: str, count: int, made: int) -> None:
    """Relay and run ``count`` no-op deliveries (of ``made`` events: as many in each run)."""
    import json

    import redis

    import tasks
    from bench.scenarios.common import NOOP
    from eda import metrics, traces
    from eda.core import Core
    from eda.delivery import Outcome, run_attempt
    from eda.event import Event
    from eda.relay import Relay

    if name != "delivery":
        metrics.enable(None)
    core = tasks.connect()
    traces.enable(core.settings)
    store = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"], decode_responses=True)
    plain, relay = Core(core.settings, store), Relay(core, wait=0.01)
    body = json.loads(payload_of_size())
    ids = []
    for index in range(made + WARMUP):
        parent = SENDER
        if name == "delivery-sampled":  # a trace of its own, sampled or not by its sender
            flags = "01" if index % SAMPLED_EVERY == 0 else "00"
            parent = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-{flags}"
        event = Event.create(
            type="bench.noop", source="bench", payload=body, attributes={"traceparent": parent}
        )
        plain.publish_event(event)
        ids.append(event.id)

    def run(chunk: list[str]) -> None:
        store.rpush(core.keys.dispatch, *chunk)
        taken = 0
        while taken < len(chunk):
            taken += relay.dispatch_batch()
        lanes = [key for key in broker.keys("*") if broker.type(key) == "list"]
        for key in lanes:  # each message as the worker would take it
            for raw in list(broker.lrange(key, 0, -1)):
                message = json.loads(str(raw))
                args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
                task_id, trace = message["headers"]["id"], kwargs.get("trace")
                verdict = run_attempt(core, args[0], NOOP, task_id, "here", None, trace)
                assert verdict.outcome is Outcome.SUCCEEDED, verdict
            broker.delete(key)

    run(ids[made:])  # warm-up
    gc.collect()
    gc.freeze()
    # The SDK's trace ids come from ``random``: whether a relay batch's span (a trace of
    # its own) is sampled is then the same in every run.
    random.seed(0)
    run(ids[:count])
    traces.flush()


def payload_of_size() -> bytes:
    from bench.http_load import payload

    return payload("noop", PAYLOAD_BYTES)


def child(app_name: str, count: int, made: int) -> None:
    """Send ``count`` webhooks through the app (of ``made`` signed: as many in each run)."""
    if app_name in DELIVERIES:
        relay_and_run(app_name, count, made)
        return
    from gevent import monkey

    monkey.patch_all()
    import importlib

    module, _, attribute = APPS[app_name].partition(":")
    app = getattr(importlib.import_module(module), attribute)
    deliveries = requests(os.environ[f"EDA_WEBHOOK_SECRET_{SOURCE.upper()}"], made + WARMUP)
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        statuses.append(status)

    def send(headers: dict[str, str], body: bytes) -> None:
        for _chunk in app(environ(headers, body), start_response):
            pass

    for headers, body in deliveries[made:]:  # warm-up: first calls, connections
        send(headers, body)
    # What start-up left is not walked by the collector as the run goes: how many such
    # walks a run makes is what varied most from run to run.
    gc.collect()
    gc.freeze()
    for headers, body in deliveries[:count]:
        send(headers, body)
    from eda import traces

    traces.flush()
    wrong = [status for status in statuses if not status.startswith("202")]
    if wrong:
        raise SystemExit(f"{app_name}: answered {wrong[:3]} ...")


def counted(app_name: str, count: int, made: int, env: dict[str, str], folder: Path) -> int:
    """Instructions of one child run under callgrind."""
    out = folder / f"callgrind.{app_name}.{count}"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        app_name,
        "--requests",
        str(count),
        "--made",
        str(made),
    ]
    run = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if run.returncode:
        raise RuntimeError(f"{app_name} failed:\n{run.stderr.decode()[-3000:]}")
    found = _TOTALS.search(out.read_bytes())
    if found is None:
        raise RuntimeError(f"no totals in {out}")
    return int(found.group(1))


def per_unit(app_name: str, count: int, env: dict[str, str], folder: Path) -> float:
    once = counted(app_name, count, 2 * count, env, folder)
    twice = counted(app_name, 2 * count, 2 * count, env, folder)
    return (twice - once) / count


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument(
        "apps",
        nargs="*",
        metavar="APP",
        help=f"of {', '.join([*APPS, *DELIVERIES])} (the web's by default)",
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--made", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        child(options.child, options.requests, options.made)
        return
    known = [*APPS, *DELIVERIES]
    unknown = sorted(set(options.apps) - set(known))
    if unknown:
        parser.error(f"no app {', '.join(unknown)}: choose among {', '.join(known)}")
    from bench.otlp_sink import Sink
    from bench.scenarios.common import SAMPLED
    from eda.redis_server import free_port, start_server, wait_until_ready

    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        port = free_port()
        server = start_server(folder / "redis", port)
        stack.callback(server.wait)
        stack.callback(server.terminate)
        url = f"redis://127.0.0.1:{port}/0"
        wait_until_ready(url)
        sink = stack.enter_context(Sink())
        secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONHASHSEED": "0",
            "REDIS_URL": url,
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/1",
            "EDA_PREFIX": "instructions",
            "EDA_DATA_DIR": str(folder / "data"),
            f"EDA_WEBHOOK_SECRET_{SOURCE.upper()}": secret,
        }
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        for name in options.apps or list(APPS):
            more = traced(sink.url) if name in TRACED else {}
            if name == "delivery-sampled":
                more |= SAMPLED
            if name in DELIVERIES:  # the bench's routes, and a store of their own
                more |= {"EDA_ROUTES": str(ROOT / "bench" / "routes.yaml"), **BENCH_AGENTS}
                more["EDA_PREFIX"] = name
            figure = per_unit(name, options.requests, {**env, **more}, folder)
            unit = "delivery" if name in DELIVERIES else "webhook"
            print(f"{name:15} {figure / 1000:8.0f} k instructions per {unit}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
