"""``python -m bench.scale [--quick | --smoke] [--broker URL] [--json PATH]``: scale-out rows.

On one broker (the run's own Redis by default; ``--broker amqp://…`` names a
RabbitMQ vhost), in one run:

- raw Celery: no-op tasks per second from the first send to the queue seen
  empty, with the Procfile's pool and concurrency (``bench/raw_celery.py``);
- dispatch with the Procfile's worker: events stored → deliveries ``succeeded``
  per second, as in ``python -m bench``, with one worker, then with two workers
  consuming the same lanes (a second process started as the Procfile starts it);
- retries held: a burst of deliveries (5,000 in the full run) whose handler fails
  and whose retry waits 300 s: the worker's resident memory once all of them wait,
  against the same worker's before the burst. A countdown retry's message would
  stay in the worker, unacknowledged, until due; past ``EDA_RETRY_HOLD_MAX`` the
  store holds the delivery instead.

The rows: dispatch against raw Celery on the same broker, and two workers
against one. On RabbitMQ "empty" is the queue's ready count (``queue.declare``,
passive): the few tasks a worker holds unacknowledged at that moment are not
waited for, which flatters raw Celery by at most the worker's concurrency.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.figures import Figure, median_run
from bench.procfile import read_procfile
from bench.report import Progress, table, write_json
from bench.services import Process, Stack
from bench.sizes import MODES

if TYPE_CHECKING:
    from bench.context import Bench

#: Failing deliveries the full run holds waiting for their retry.
RETRY_BURST = 5000


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    for name in ("quick", "smoke"):
        mode.add_argument(f"--{name}", action="store_const", const=name, dest="mode")
    parser.add_argument("--broker", default="", help="this broker's URL instead of the run's Redis")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.set_defaults(mode="full")
    return parser.parse_args(argv)


def kind(broker_url: str) -> str:
    return "RabbitMQ" if broker_url.startswith("amqp") else "Redis"


def wait_queue_empty(broker_url: str, queue: str) -> float:
    """The ``perf_counter`` time the queue was first seen empty in two looks 10 ms apart."""
    from bench.context import wait_drained, wait_empty

    if not broker_url.startswith("amqp"):
        import redis

        with redis.Redis.from_url(broker_url) as client:
            return wait_drained(client, [queue])
    from kombu import Connection

    with Connection(broker_url) as connection:
        channel = connection.channel()
        return wait_empty(lambda: int(channel.queue_declare(queue=queue, passive=True)[1]))


def raw_rates(stack: Stack, count: int, repeats: int) -> list[float]:
    """Raw Celery no-op tasks per second on the stack's broker, ``repeats`` times."""
    from bench import raw_celery

    worker = stack.raw_worker("raw-worker")
    wait_queue_empty(stack.broker_url, raw_celery.QUEUE)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(count):
            raw_celery.noop.apply_async()
        rates.append(count / (wait_queue_empty(stack.broker_url, raw_celery.QUEUE) - started))
    worker.stop()
    return rates


def retries_held(bench: Bench, worker: Process, count: int) -> tuple[int, int]:
    """The worker's RSS before ``count`` failing deliveries, and once all wait to retry."""
    from bench.scenarios.common import require, statuses, store_events

    before = worker.rss_bytes()
    ids = [event.id for event in store_events(bench, count, "failing")]
    bench.store.rpush(bench.plain_core.keys.dispatch, *ids)
    handler = "bench.handlers:fail"
    deadline = time.monotonic() + 180
    while (found := statuses(bench, ids, handler)) != {"retrying": count}:
        require(time.monotonic() < deadline, f"the failing deliveries ended as {found}")
        time.sleep(0.2)
    return before, worker.rss_bytes()


def run(mode: str, folder: Path, broker_url: str, say: Callable[[str], None]) -> list[Figure]:
    """Raw Celery, then dispatch with one worker and with two, on one broker."""
    sizes = MODES[mode]
    with Stack(folder, read_procfile(), "http://127.0.0.1:9", broker_url) as stack:
        os.environ.clear()  # this process's Celery apps read the broker from here
        os.environ.update(stack.env)
        from bench.context import Bench
        from bench.scenarios import dispatch

        bench = Bench(stack, sizes)
        name = kind(stack.broker_url)
        say(f"raw Celery on {name}")
        raw = raw_rates(stack, sizes.dispatch_events, sizes.repeats)
        first, _ = stack.worker_and_relay("worker-1", "relay")
        one, two = [], []
        say(f"dispatch on {name}, one worker")
        for index in range(sizes.repeats):
            one.append((dispatch.run_once(bench, sizes.dispatch_events).rate, raw[index]))
            bench.reset()
        second = stack.worker("worker-2")
        say(f"dispatch on {name}, two workers")
        for index in range(sizes.repeats):
            two.append((dispatch.run_once(bench, sizes.dispatch_events).rate, one[index][0]))
            bench.reset()
        second.stop()
        burst = RETRY_BURST if mode == "full" else sizes.dispatch_events
        say(f"{burst} retries held on {name}")
        before, after = retries_held(bench, first, burst)
    slug = name.lower()
    return [
        Figure(
            f"{slug}_dispatch",
            f"dispatch on {name}: events stored→succeeded/s",
            "/s",
            *median_run(one),
            f"raw Celery no-op on {name}",
            runs=one,
        ),
        Figure(
            f"{slug}_two_workers",
            f"dispatch on {name}: two workers against one",
            "/s",
            *median_run(two),
            "one worker",
            runs=two,
        ),
        Figure(
            f"{slug}_retries_held",
            f"worker RSS, {burst:,} retries waiting 300 s, {name}",
            "MiB",
            after,
            before,
            "the same worker before",
            higher_is_better=False,
            details={"bytes_per_retry": round((after - before) / burst), "retries": burst},
        ),
    ]


def main(argv: list[str]) -> int:
    options = arguments(argv)
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="eda-bench-scale-") as folder:
        figures = run(options.mode, Path(folder), options.broker, progress)
    seconds = progress.seconds()
    print(table(figures))
    print(f"\n{options.mode} run on {kind(options.broker)}, {seconds} s", flush=True)
    if options.json:
        context = {
            "mode": options.mode,
            "broker": kind(options.broker),
            "seconds": seconds,
            "cpus": os.cpu_count(),
            "sizes": MODES[options.mode].__dict__,
        }
        write_json(options.json, figures, context)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
