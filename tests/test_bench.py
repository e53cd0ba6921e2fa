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

FIGURES = {
    "ingest", "ingest_vs_store_only", "ingest_observed", "ingest_p50", "ingest_p99", "replay",
    "dlq_retry", "dispatch", "dispatch_vs_events", "dispatch_observed",
    "redis_bytes_per_event", "agents", "agents_vs_sdk",
    "agents_capped", "agents_tools", "own_tool_cpu",
    "e2e_p50", "e2e_p99", "worker_rss",
}  # fmt: skip


@pytest.mark.timeout(180)
def test_a_smoke_run_completes_and_writes_every_figure_as_json(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"

    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-4000:]
    document = json.loads(report.read_text())
    assert document["mode"] == "smoke"
    assert set(document["figures"]) == FIGURES
    assert document["otlp_exports"] > 0  # the observed rows' processes really exported spans
    for key, figure in document["figures"].items():
        assert math.isfinite(figure["ours"]) and figure["baseline"] > 0, key
        assert math.isfinite(figure["ratio"]), key
        assert f"| {figure['title']}" in done.stdout


@pytest.mark.brokers
@pytest.mark.timeout(150)
def test_the_scale_rows_measure_one_and_two_workers_on_the_broker(
    tmp_path: Path, bench_broker: str
) -> None:
    report = tmp_path / "scale.json"
    broker = ["--broker", bench_broker] if bench_broker else []

    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--smoke", "--json", str(report), *broker],
        cwd=ROOT, capture_output=True, text=True, timeout=140,
    )  # fmt: skip

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
