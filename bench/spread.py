"""``python -m bench.spread RUN.json [RUN.json ...]``: several runs' figures in one table.

Each file is what ``python -m bench --json`` wrote. A row gives each run's ratio,
their median and spread (lowest to highest), ours and the baseline of the median
run, the target and in how many runs it was met: the README's Performance table.
A figure missing from a run (an older run, another mode) is left out of its cells.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.figures import median
from bench.report import markdown, number


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """Each run's figures by key; a file that is not a run's JSON is a clear error."""
    runs = []
    for path in paths:
        try:
            document = json.loads(path.read_text())
            runs.append(dict(document["figures"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"bench.spread: {path}: not a run's JSON ({exc})") from None
    return runs


def rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    """The table's rows, in the first run's order of figures, header first."""
    numbers = [f"run {n}" for n in range(1, len(runs) + 1)]
    found = [["figure", *numbers, "median", "spread", "ours", "baseline", "target", "met"]]
    keys = list(dict.fromkeys(key for run in runs for key in run))
    for key in keys:
        present = [run[key] for run in runs if key in run]
        ratios = [float(figure["ratio"]) for figure in present]
        middle = median(ratios)
        central = min(present, key=lambda figure: abs(float(figure["ratio"]) - middle))
        cells = [f"{run[key]['ratio']:.2f}x" if key in run else "-" for run in runs]
        unit = str(central["unit"])
        judged = [figure["met"] for figure in present if figure["met"] is not None]
        met = f"{sum(judged)} of {len(judged)}" if judged else ""
        found.append(
            [
                str(present[-1]["title"]),
                *cells,
                f"{middle:.2f}x",
                f"{min(ratios):.2f} to {max(ratios):.2f}x",
                number(float(central["ours"]), unit),
                f"{number(float(central['baseline']), unit)} ({central['baseline_name']})",
                str(central["target"]),
                met,
            ]
        )
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spread", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="JSON files of python -m bench")
    options = parser.parse_args(argv)
    print(markdown(rows(load(options.runs))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
