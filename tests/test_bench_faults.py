"""The fault suite, short: the Procfile's processes through every fault, nothing lost or stuck."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.faults.scenarios import SCENARIOS
from tests.workers import ROOT


def test_every_fault_leaves_nothing_unrun_unstored_or_stuck(tmp_path: Path) -> None:
    figures = tmp_path / "faults.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--short", "--json", str(figures),
         "--keep", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert figures.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    rows = {row["name"]: row for row in json.loads(figures.read_text())}
    assert set(rows) == {scenario.name for scenario in SCENARIOS}
    for name, row in rows.items():
        assert row["answered"] > 0, name
        # Every event answered 202 is stored, ran, and no delivery is left in flight.
        assert (row["not_stored"], row["never"], row["stuck"], row["dead"]) == (0, 0, 0, 0), row
        # Twice only where a process died between a handler's work and its record.
        assert row["twice"] == 0 or row["may_duplicate"], row
        assert row["once"] + row["twice"] == row["answered"], row
    assert done.returncode == 0, done.stdout[-3000:]
    assert "| fault " in done.stdout and "recovery" in done.stdout
