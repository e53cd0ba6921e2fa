"""``python -m bench [--quick | --smoke] [--json PATH]``: run the suite, print the table.

Order matters only for what runs at the same time: ingest with no worker, the
raw baselines with no project worker, replay with no worker, then the
Procfile's worker for dispatch, agents and end-to-end latency.

Processes that can run at once start at once (the ingest's webs, a worker and its
relay, the latency's web with them) and stop at once: nothing is measured while they
start or stop. Each is measured with the others idle: the ingest loads one web at a
time, and the latency's web, started with the worker, serves nothing until its phase.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.figures import Figure
from bench.messages_api import MessagesAPI
from bench.otlp_sink import Sink
from bench.procfile import WEB_APP, read_procfile
from bench.report import Progress, commands, table, write_json
from bench.services import Stack, stop_all, wait_answering
from bench.sizes import MODES


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="mode",
        help="smaller counts, one repetition (under two minutes)",
    )
    mode.add_argument(
        "--smoke",
        action="store_const",
        const="smoke",
        dest="mode",
        help="the smallest run that still yields every figure (CI)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.set_defaults(mode="full")
    return parser.parse_args(argv)


def run(mode: str, folder: Path, progress: Any) -> tuple[list[Figure], dict[str, Any]]:
    """Start everything, measure every figure, stop everything."""
    sizes = MODES[mode]
    procfile = read_procfile()
    with (
        MessagesAPI(sizes.model_delay) as api,
        Stack(folder, procfile, api.url) as stack,
        Sink() as sink,
    ):
        # The Celery app of this process reads its broker from the environment on import:
        # this process runs in the environment it gives its children, and no other.
        os.environ.clear()
        os.environ.update(stack.env)
        from bench.context import Bench
        from bench.scenarios import agents, dispatch, ingest, latency, raw, replay

        observed = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_SERVICE_NAME": "eda-bench"}
        bench = Bench(stack, sizes, observed=observed)
        figures: list[Figure] = []
        progress("ingest")
        figures += ingest.measure(bench)
        progress("raw Celery baselines")
        baseline = raw.measure(bench)
        progress("replay and dead-letter retry")
        figures += replay.measure(bench, baseline)
        # The latency's web starts with the worker and relay, and idles until its phase.
        web = stack.start_web("web-latency", WEB_APP)
        worker, relay = stack.worker_and_relay("worker", "relay")
        wait_answering(*web)
        progress("dispatch")
        dispatched = dispatch.measure(bench, baseline, [worker, relay])
        figures += dispatched
        progress("agents")
        figures += agents.measure(bench, api, [worker, relay])
        progress("end-to-end latency")
        figures += latency.measure(bench, baseline, worker, web[1])
        stop_all(worker, relay, web[0])
        progress("dispatch with traces and metrics on")
        plain = [ours for ours, _ in dispatched[0].runs]
        figures += dispatch.measure_observed(bench, plain)
        context_exports = sink.exports
    context = {
        "mode": mode,
        "sizes": sizes.__dict__,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "procfile": {"web": procfile.web, "worker": procfile.worker},
        "otlp_exports": context_exports,
        **bench.notes,
    }
    return figures, context


def main(argv: list[str]) -> int:
    options = arguments(argv)
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="eda-bench-") as folder:
        figures, context = run(options.mode, Path(folder), progress)
    context["seconds"] = progress.seconds()
    print(table(figures))
    print(commands(context["redis_commands_per_delivery"]))
    print(f"\n{options.mode} run, {context['seconds']} s", flush=True)
    if options.json:
        write_json(options.json, figures, context)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
