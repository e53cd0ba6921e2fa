"""bench: the benchmark suite runs end to end and reports every figure (no thresholds here).

The smoke mode is the shortest run that still starts everything the suite
starts (Redis, two gunicorns, Celery workers, a Messages API) and measures each
figure; whether a figure meets its target is for the full run, not for CI.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workers import ROOT

#: CPU seconds per unit (request, delivery, call), ours and the baseline's.
CPU_FIGURES = {
    "ingest_cpu",
    "ingest_cpu_vs_store_only",
    "replay_cpu",
    "dlq_retry_cpu",
    "dispatch_cpu",
    "dispatch_cpu_vs_events",
    "agents_cpu",
}
FIGURES = CPU_FIGURES | {
    "ingest",
    "ingest_vs_store_only",
    "ingest_observed",
    "ingest_sampled",
    "ingest_p50",
    "ingest_p99",
    "replay",
    "dlq_retry",
    "dispatch",
    "dispatch_vs_events",
    "dispatch_observed",
    "dispatch_sampled",
    "dispatch_round_trips",
    "redis_bytes_per_event",
    "agents",
    "agents_vs_sdk",
    "agents_cpu_beyond_sdk",
    "agents_cpu_own",
    "agents_capped",
    "agents_tools",
    "own_tool_cpu",
    "e2e_p50",
    "e2e_p99",
    "worker_rss",
}


@pytest.mark.timeout(180)
def test_a_smoke_run_completes_and_writes_every_figure_as_json(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"

    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    document = json.loads(report.read_text())
    assert document["mode"] == "smoke"
    assert set(document["figures"]) == FIGURES
    assert document["otlp_exports"] > 0  # the observed rows' processes really exported spans
    for key, figure in document["figures"].items():
        assert math.isfinite(figure["ours"]) and figure["baseline"] > 0, key
        assert math.isfinite(figure["ratio"]), key
        assert f"| {figure['title']}" in done.stdout
    figures = document["figures"]
    for key in CPU_FIGURES:  # a millisecond-scale cost, counted: neither nothing nor seconds
        assert 0 < figures[key]["ours"] < 0.5 and 0 < figures[key]["baseline"] < 0.5, key
    beyond = figures["agents_cpu_beyond_sdk"]
    assert beyond["ours"] == figures["agents_cpu"]["ours"] - figures["agents_cpu"]["baseline"]
    noop = beyond["details"]["noop_delivery_cpu_s"]
    assert 0 < noop < figures["agents_cpu"]["ours"], beyond  # a no-op delivery, counted
    assert figures["agents_cpu_own"]["ours"] == beyond["ours"] - noop
    # A delivery takes a few round trips (a fetch, an acknowledgement, the relay's sends), and
    # the suite's own polling for the end of the run is not among them.
    trips = figures["dispatch_round_trips"]
    assert 2 <= trips["baseline"] <= 10 and 2 <= trips["ours"] <= 50, trips
    commands = document["redis_commands_per_delivery"]
    assert set(commands) == {"ours", "raw", "raw_events"}
    assert commands["raw"]["brpop"] > 0 and commands["raw"].get("llen", 0) < 0.5, commands
    assert "Redis commands per delivery" in done.stdout
    # The end-to-end rate is half what raw Celery did in the same run.
    rate = figures["e2e_p99"]["details"]["rate_per_s"]
    assert rate == round(0.5 * figures["dispatch"]["baseline"]), rate
    assert f"at {rate:,}/s" in figures["e2e_p99"]["title"]


@pytest.mark.brokers
@pytest.mark.timeout(150)
def test_the_scale_rows_measure_one_and_two_workers_on_the_broker(
    tmp_path: Path, bench_broker: str
) -> None:
    report = tmp_path / "scale.json"
    broker = ["--broker", bench_broker] if bench_broker else []

    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--smoke", "--json", str(report), *broker],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=140,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    document = json.loads(report.read_text())
    kind = "rabbitmq" if bench_broker else "redis"
    assert set(document["figures"]) == {
        f"{kind}_dispatch",
        f"{kind}_two_workers",
        f"{kind}_retries_held",
    }
    dispatch, two = (
        document["figures"][f"{kind}_dispatch"],
        document["figures"][f"{kind}_two_workers"],
    )
    assert dispatch["baseline_name"].startswith("raw Celery no-op on")
    # Both rows measured real deliveries: the two-worker row's baseline is the one-worker rate.
    assert dispatch["ours"] > 0 and two["ours"] > 0
    assert two["baseline"] == dispatch["ours"]
    # Deliveries waiting out a long retry are held in the store, not in the worker.
    held = document["figures"][f"{kind}_retries_held"]
    assert held["details"]["retries"] > 0 and held["ratio"] < 1.25, held


def test_several_runs_are_one_table_with_each_ratio_their_median_and_spread(
    tmp_path: Path,
) -> None:
    from bench.figures import Figure
    from bench.report import write_json

    paths = []
    for n, (ours, met) in enumerate([(50.0, False), (70.0, True), (60.0, True)]):
        figures = [
            Figure(
                "ingest",
                f"ingest, run {n}",
                "req/s",
                ours,
                100.0,
                "bare Flask",
                target="≥ 0.5x",
                met=met,
            )
        ]
        if n:  # a figure the first run did not have yet
            figures.append(Figure("bytes", "bytes per event", "B", 2000.0 + n, 1000.0, "payload"))
        paths.append(tmp_path / f"run{n}.json")
        write_json(paths[-1], figures, {"mode": "full"})

    done = subprocess.run(
        [sys.executable, "-m", "bench.spread", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    header, _, ingest, size = done.stdout.splitlines()
    assert [c.strip() for c in header.strip("|").split("|")][:6] == [
        "figure",
        "run 1",
        "run 2",
        "run 3",
        "median",
        "spread",
    ]
    cells = [c.strip() for c in ingest.strip("|").split("|")]
    assert cells == [
        "ingest, run 2",
        "0.50x",
        "0.70x",
        "0.60x",
        "0.60x",
        "0.50 to 0.70x",
        "60 req/s",
        "100 req/s (bare Flask)",
        "≥ 0.5x",
        "2 of 3",
    ]
    cells = [c.strip() for c in size.strip("|").split("|")]
    assert cells[1:6] == ["-", "2.00x", "2.00x", "2.00x", "2.00 to 2.00x"] and cells[-1] == ""

    (tmp_path / "bad.json").write_text("{not json")
    refused = subprocess.run(
        [sys.executable, "-m", "bench.spread", str(tmp_path / "bad.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "bad.json: not a run's JSON" in refused.stderr
    assert "Traceback" not in refused.stderr
