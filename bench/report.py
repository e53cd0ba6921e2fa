"""The table printed at the end of a run, and the same figures as JSON."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from bench.figures import Figure


def number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "MiB":
        return f"{value / 2**20:,.1f} MiB"
    if unit == "ms":
        return f"{value * 1000:,.1f} ms"
    if unit == "µs":
        return f"{value * 1e6:,.0f} µs"
    if unit == "trips":
        return f"{value:,.2f} trips"
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value:,.0f} {unit}"


def _met(figure: Figure) -> str:
    return {True: "yes", False: "NO", None: ""}[figure.met]


def table(figures: list[Figure]) -> str:
    """A Markdown table: figure, ours, baseline, ratio, target, met."""
    rows = [["figure", "ours", "baseline", "ratio", "target", "met"]]
    for f in figures:
        rows.append(
            [
                f.title,
                number(f.ours, f.unit),
                f"{number(f.baseline, f.unit)} ({f.baseline_name})",
                f"{f.ratio:.2f}x",
                f.target,
                _met(f),
            ]
        )
    return markdown(rows)


def commands(by_run: dict[str, dict[str, float]]) -> str:
    """Redis commands per delivery by name, a line for each run (ours, raw Celery's).

    Commands called less than once in a hundred deliveries are left to the JSON.
    """
    lines = ["\nRedis commands per delivery (dispatch):"]
    for run, calls in by_run.items():
        shown = ", ".join(f"{name} {n:.2f}" for name, n in calls.items() if n >= 0.01)
        lines.append(f"- {run}: {shown}")
    return "\n".join(lines)


def markdown(rows: list[list[str]]) -> str:
    """Rows (the first being the header) as an aligned Markdown table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def write_json(path: Path, figures: list[Figure], context: dict[str, Any]) -> None:
    """Every figure by key, with the run's context (mode, machine, configuration)."""
    document = {**context, "figures": {f.key: f.as_dict() for f in figures}}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


class Progress:
    """A run's steps on stderr, each with the seconds since the run began."""

    def __init__(self) -> None:
        self.began = time.monotonic()

    def __call__(self, step: str) -> None:
        print(f"[{self.seconds():6.1f} s] {step}", file=sys.stderr, flush=True)

    def seconds(self) -> float:
        return round(time.monotonic() - self.began, 1)
