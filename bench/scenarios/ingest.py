"""Ingest: signed webhook POSTs/s answered 202 (stored), against a bare Flask endpoint.

A second row compares with an endpoint that does the least a durable one does:
one Redis write of the body (XADD) before it answers. A third compares the web
with traces on (exported over OTLP to the run's sink) against the same web with
them off; its metrics are counted either way. The apps run under the Procfile's
gunicorn configuration, at the same time, and each repetition loads each in turn
so that drift hits them alike. No worker runs: this is the web tier alone.
"""

from __future__ import annotations

import os

from bench.context import Bench
from bench.figures import Figure, median_run, percentile
from bench.http_load import Answers, Target, run_closed_loop
from bench.procfile import WEB_APP
from bench.scenarios.common import require
from bench.services import SOURCE

#: The target: at least half the bare endpoint's requests per second.
TARGET = 0.5
#: Traces and metrics on cost at most a tenth of the requests per second.
OBSERVED_TARGET = 0.9


def _load(bench: Bench, port: int) -> tuple[Answers, float]:
    sizes = bench.sizes
    target = Target(port, SOURCE, bench.stack.secret, "noop", sizes.payload_bytes)
    answers = run_closed_loop(target, sizes.load_processes, sizes.load_connections,
                              sizes.ingest_warmup, sizes.ingest_seconds)  # fmt: skip
    return answers, len(answers.latencies) / sizes.ingest_seconds


def measure(bench: Bench) -> list[Figure]:
    hello, hello_port = bench.stack.web("hello", "bench.hello:app")
    store_only, store_only_port = bench.stack.web("store-only", "bench.hello:stored")
    web, web_port = bench.stack.web("web", WEB_APP)
    observed, observed_port = bench.stack.web("web-observed", WEB_APP, bench.observed)
    rates: list[tuple[float, float]] = []
    traced: list[tuple[float, float]] = []
    against_store_only: list[tuple[float, float]] = []
    p50: list[tuple[float, float]] = []
    p99: list[tuple[float, float]] = []
    cpu = 0.0
    for _ in range(bench.sizes.repeats):
        flask, flask_rate = _load(bench, hello_port)
        _, store_only_rate = _load(bench, store_only_port)
        ours, our_rate = _load(bench, web_port)
        require(set(ours.statuses) == {202}, f"webhooks answered {dict(ours.statuses)}:\n"
                f"{web.log()[-2000:]}")  # fmt: skip
        seen, seen_rate = _load(bench, observed_port)
        require(set(seen.statuses) == {202}, f"traced webhooks answered {dict(seen.statuses)}")
        traced.append((seen_rate, our_rate))
        rates.append((our_rate, flask_rate))
        against_store_only.append((our_rate, store_only_rate))
        p50.append((percentile(ours.latencies, 0.5), percentile(flask.latencies, 0.5)))
        p99.append((percentile(ours.latencies, 0.99), percentile(flask.latencies, 0.99)))
        cpu = max(cpu, ours.cpu_seconds, flask.cpu_seconds)
    hello.stop()
    store_only.stop()
    web.stop()
    observed.stop()
    stored = int(bench.store.xlen(bench.plain_core.keys.stream))
    bench.reset()
    ours_rate, flask_rate = median_run(rates)
    elapsed = bench.sizes.ingest_warmup + bench.sizes.ingest_seconds
    details = {"stored": stored, "load_cpu_share": round(cpu / elapsed / (os.cpu_count() or 1), 3),
               "load": f"{bench.sizes.load_processes} processes x "
                       f"{bench.sizes.load_connections} keep-alive connections"}  # fmt: skip
    return [
        Figure("ingest", "ingest: webhooks 202/s", "req/s", ours_rate, flask_rate,
               "bare Flask", target=f"≥ {TARGET}x", met=ours_rate >= TARGET * flask_rate,
               runs=rates, details=details),
        Figure("ingest_vs_store_only", "ingest: the same, against one XADD per request",
               "req/s", *median_run(against_store_only), "Flask storing the body, no checks",
               runs=against_store_only),
        Figure("ingest_observed", "ingest: traces on, against off", "req/s",
               *median_run(traced), "the same web, traces off",
               target=f"≥ {OBSERVED_TARGET}x",
               met=median_run(traced)[0] >= OBSERVED_TARGET * median_run(traced)[1],
               runs=traced),
        Figure("ingest_p50", "ingest: p50 latency", "ms", *median_run(p50), "bare Flask",
               higher_is_better=False, runs=p50),
        Figure("ingest_p99", "ingest: p99 latency", "ms", *median_run(p99), "bare Flask",
               higher_is_better=False, runs=p99),
    ]  # fmt: skip
