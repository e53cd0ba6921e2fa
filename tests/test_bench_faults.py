"""The fault suite, short: the Procfile's processes through every fault, nothing lost or stuck.

On the Redis half the run has a Redis broker of its own, which the Redis faults
stop; on the RabbitMQ half (``--broker=rabbitmq``) it runs on a vhost of the
suite's node, with the faults that do not stop the broker (worker and relay
``kill -9`` among them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.faults.__main__ import chosen, ok, table
from bench.faults.scenarios import SCENARIOS, Row
from tests.workers import ROOT

pytestmark = pytest.mark.brokers


def test_every_fault_leaves_nothing_unrun_unstored_or_stuck(
    tmp_path: Path, bench_broker: str
) -> None:
    figures = tmp_path / "faults.json"
    broker = ["--broker", bench_broker] if bench_broker else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.faults",
            "--short",
            "--json",
            str(figures),
            "--keep",
            str(tmp_path / "run"),
            *broker,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert figures.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    rows = {row["name"]: row for row in json.loads(figures.read_text())}
    assert set(rows) == {scenario.name for scenario in chosen([], bench_broker)}
    assert {"worker kill -9, restarted", "relay kill -9, restarted"} <= set(rows)
    for name, row in rows.items():
        assert row["answered"] > 0, name
        # Every event answered 202 is stored, ran, and no delivery is left in flight.
        assert (row["not_stored"], row["never"], row["stuck"], row["dead"]) == (0, 0, 0, 0), row
        # Twice only where a process died between a handler's work and its record.
        assert row["twice"] == 0 or row["may_duplicate"], row
        assert row["once"] + row["twice"] == row["answered"], row
    worker = rows["worker kill -9, restarted"]
    assert worker["recovery"] <= worker["recovers_within"] == 60, worker
    assert done.returncode == 0, done.stdout[-3000:]
    assert "| fault " in done.stdout and "recovery" in done.stdout
    if bench_broker:  # the workers really consumed the node, not a Redis
        assert "Connected to amqp://" in (tmp_path / "run" / "worker-1.log").read_text()


def test_a_worker_kill_whose_deliveries_recover_after_60_s_fails_the_run() -> None:
    (scenario,) = [s for s in SCENARIOS if s.name == "worker kill -9, restarted"]
    bound = scenario.recovers_within

    def row(recovery: float | None) -> Row:
        return Row(scenario.name, answered=10, once=10, recovery=recovery, recovers_within=bound)

    assert bound == 60
    assert ok(row(59.0)) and ok(row(60.0))
    assert not ok(row(61.0)) and not ok(row(None))  # late, or never settled in the run
    assert "61.0 s (over 60 s)" in table([row(61.0)])
    assert ok(Row("relay kill -9, restarted", answered=10, once=10, recovery=300.0))
