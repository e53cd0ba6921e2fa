"""``python -m bench.faults [--short] [--count N] [--rate R] [--only NAME] [--broker URL]``.

Starts the Procfile's web, worker, relay and beat on private Redis servers (in a
temporary folder, on loopback), runs every scenario of ``bench/faults/scenarios.py``
one after the other on them, and prints the table: answered 202, not stored, ran
once, ran twice, never ran, stuck, dead-lettered, recovery time. The full run
keeps the project's default settings (a killed worker's deliveries come back
through recovery, as in production); ``--short`` (the test suite's) uses
millisecond ones and a few events per scenario. ``--broker amqp://…`` runs on
that broker (a RabbitMQ vhost) instead of a Redis broker of the run's own, and
leaves out the faults that stop the broker (the Redis restarts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.faults.scenarios import SCENARIOS, Row, Running, Scenario, Timing, run
from bench.faults.stack import FaultStack
from bench.procfile import read_procfile
from bench.report import markdown

#: Millisecond settings of the short run: recovery, heartbeats, sweeps and retries.
SHORT_SETTINGS = {
    "EDA_RECOVERY_GRACE": "0.5",
    "EDA_HEARTBEAT_INTERVAL": "0.2",
    "EDA_SWEEP_INTERVAL": "0.3",
    "EDA_OUTBOX_GRACE": "0.5",
    "EDA_RETRY_BACKOFF": "0.05",
    "EDA_RETRY_BACKOFF_MAX": "0.4",
    "EDA_STORE_WAIT": "5",
    "EDA_VISIBILITY_TIMEOUT": "30",
    "EDA_TASK_TIME_LIMIT": "10",
    "EDA_TASK_SOFT_TIME_LIMIT": "8",
}
SHORT = Timing(worker_down=0.5, relay_down=0.5, redis_down=0.5, settle=30.0, look=0.05)
#: The issue's faults: a worker restarted after 5 s, Redis after 3 s.
FULL = Timing(worker_down=5.0, relay_down=2.0, redis_down=3.0, settle=180.0, look=0.2)


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--short", action="store_true", help="millisecond settings, few events")
    parser.add_argument("--count", type=int, help="webhooks per scenario (3000; short: 40)")
    parser.add_argument("--rate", type=float, help="webhooks per second (100; short: 40)")
    parser.add_argument("--only", action="append", help="run only scenarios naming this")
    parser.add_argument("--keep", type=Path, help="keep the processes' logs and data here")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument(
        "--broker",
        default="",
        help="this broker's URL instead of a Redis of "
        "the run's own (the faults that stop the broker are left out)",
    )
    return parser.parse_args(argv)


def chosen(only: list[str], broker: str) -> list[Scenario]:
    """The scenarios named (all by default) that apply to the broker."""
    named = [s for s in SCENARIOS if not only or any(o in s.name for o in only)]
    return [s for s in named if not (broker and s.stops_broker)]


def run_all(
    folder: Path, short: bool, count: int, rate: float, only: list[str], broker: str = ""
) -> list[Row]:
    """Start the processes once, run the chosen scenarios on them, stop everything."""
    timing = SHORT if short else FULL
    settings = SHORT_SETTINGS if short else {}
    with FaultStack(folder, read_procfile(), settings, broker) as stack:
        # This process reads its settings from the environment it gives its children.
        os.environ.clear()
        os.environ.update(stack.env)
        port, worker, relay = stack.start_all()
        running = Running(stack, worker, relay)
        return [run(running, port, s, count, rate, timing) for s in chosen(only, broker)]


def table(rows: list[Row]) -> str:
    """The issue's table, one row per scenario."""
    lines = [
        [
            "fault",
            "answered 202",
            "not stored",
            "ran once",
            "ran twice",
            "never ran",
            "stuck",
            "dead-lettered",
            "recovery",
        ]
    ]
    for row in rows:
        answers = ", ".join(f"{n} {'no answer' if s < 0 else s}" for s, n in row.refused.items())
        refused = f" ({answers})" if row.refused else ""
        recovery = "-" if row.recovery is None else f"{row.recovery:.1f} s"
        if late(row):
            recovery += f" (over {row.recovers_within:g} s)"
        lines.append(
            [
                row.name,
                f"{row.answered:,}{refused}",
                str(row.not_stored),
                f"{row.once:,}",
                str(row.twice),
                str(row.never),
                str(row.stuck),
                str(row.dead),
                recovery,
            ]
        )
    return markdown(lines)


def main(argv: list[str]) -> int:
    options = arguments(argv)
    count = options.count or (40 if options.short else 3000)
    rate = options.rate or (40.0 if options.short else 100.0)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="eda-faults-") as folder:
        kept = options.keep or Path(folder)
        kept.mkdir(parents=True, exist_ok=True)
        rows = run_all(kept, options.short, count, rate, options.only or [], options.broker)
    print(table(rows))
    if options.json:
        options.json.write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d}, {count} webhooks per scenario at {rate:g}/s, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{'short' if options.short else 'default'} settings, "
        f"broker {scheme(options.broker)}, "
        f"{time.monotonic() - began:.0f} s",
        flush=True,
    )
    return 0 if all(ok(row) for row in rows) else 1


def scheme(broker: str) -> str:
    """The broker's kind, without its credentials."""
    return broker.split(":", 1)[0] if broker else "redis (the run's own)"


def ok(row: Row) -> bool:
    """Nothing lost, nothing stuck, duplicates only where a process died mid-run, and
    recovery within its bound where the fault has one."""
    clean = not (row.not_stored or row.never or row.stuck)
    return clean and (row.may_duplicate or row.twice == 0) and not late(row)


def late(row: Row) -> bool:
    """Whether the row's deliveries settled past its bound, or not before the run gave up."""
    bound = row.recovers_within
    return bound is not None and (row.recovery is None or row.recovery > bound)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
