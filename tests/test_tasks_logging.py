"""tasks: workers log each delivery once, in the project's format, not Celery's per-task lines."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.workers import ROOT

PROGRAM = """
import logging
import tasks
tasks._configure_logging()
print(logging.getLogger().level, *(logging.getLogger(n).level for n in tasks.PER_TASK_LOGGERS))
"""


def run(level: str) -> list[int]:
    env = {**os.environ, "EDA_LOG_LEVEL": level, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    return [int(x) for x in done.stdout.split()]


def test_celery_per_task_lines_are_quiet_but_its_warnings_show() -> None:
    root, *per_task = run("INFO")
    assert root == 20 and per_task == [30, 30]
    root, *per_task = run("ERROR")
    assert root == 40 and per_task == [40, 40]
