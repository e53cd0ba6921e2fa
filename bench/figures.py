"""A figure of the suite: what was measured, against which baseline, as a ratio."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    """One row of the table: ours against the baseline of the same run.

    ``higher_is_better`` says which way the ratio should go; ``met`` is None for a
    figure without a target. ``runs`` keeps every repetition's (ours, baseline).
    """

    key: str
    title: str
    unit: str
    ours: float
    baseline: float
    baseline_name: str
    higher_is_better: bool = True
    target: str = ""
    met: bool | None = None
    runs: list[tuple[float, float]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median_run(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The repetition whose ratio is the median (ours and baseline from the same repetition)."""
    ordered = sorted(runs, key=lambda run: run[0] / run[1] if run[1] else 0.0)
    return ordered[(len(ordered) - 1) // 2]


def judged(
    runs: list[tuple[float, float]], ratio: float, higher_is_better: bool = True
) -> dict[str, Any]:
    """A target of ``ratio`` times the baseline and whether the median run meets it: the
    keywords of a :class:`Figure` that has one."""
    ours, baseline = median_run(runs)
    met = ours >= ratio * baseline if higher_is_better else ours <= ratio * baseline
    sign = "≥" if higher_is_better else "≤"
    return {"higher_is_better": higher_is_better, "target": f"{sign} {ratio}x", "met": met}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
