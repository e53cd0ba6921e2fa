"""The core imports no framework: Celery, Flask, kombu and anthropic stay out of it."""

from __future__ import annotations

import json
import subprocess
import sys

#: The modules of the core, imported together in a fresh interpreter; and the agents,
#: which workers run but which the web and the scripts load too, without Celery.
CORE = ["eda", "eda.core", "eda.store", "eda.routes", "eda.lanes", "eda.dead_letters", "eda.times"]
CORE += ["agents"]
#: Frameworks that belong to the faces around the core, never to the core itself.
FRAMEWORKS = ["celery", "flask", "anthropic", "kombu"]

PROBE = """
import json, sys
for name in sys.argv[1].split(","):
    __import__(name)
frameworks = sys.argv[2].split(",")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in frameworks)
print(json.dumps(loaded))
"""


def loaded_frameworks(modules: list[str]) -> list[str]:
    """The framework modules present in sys.modules after importing ``modules`` afresh."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(modules), ",".join(FRAMEWORKS)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return list(json.loads(result.stdout))


def test_importing_the_core_loads_no_framework() -> None:
    assert loaded_frameworks(CORE) == []


def test_the_probe_would_see_a_framework_if_one_were_imported() -> None:
    assert "kombu" in loaded_frameworks([*CORE, "kombu"])
