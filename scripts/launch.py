"""Run a tool script of gantz.yaml with the project's Python, from any shell.

``python3 scripts/launch.py TOOL_SCRIPT [ARG ...]`` runs ``scripts/TOOL_SCRIPT.py``
under the interpreter of the project's virtual environment (``.venv`` in the
repository, as ``scripts/dev.py`` makes it) whatever ``python3`` the caller's
``PATH`` finds first: the Gantz CLI runs each tool's command from its own
``PATH``, where the project's packages are rarely installed. Without a
``.venv`` the script runs under the interpreter that started this launcher (a
deployment that installed the project there); when the project's packages
cannot be imported there either, it fails with one JSON line on stderr that
says what to do, as every tool script fails.

Standard library only, and nothing is imported from the project before the
interpreter is settled.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The project's virtual environment and its interpreter.
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
#: A tool script's name: a module of scripts/.
SCRIPT_NAME = re.compile(r"[a-z][a-z0-9_]*")
#: Exit code when the environment, not the input, is wrong (as scripts.gantz.EXIT_INTERNAL).
EXIT_ENVIRONMENT = 1


def fail(message: str) -> None:
    error = {"error": "environment", "field": None, "message": message}
    print(json.dumps(error), file=sys.stderr)
    sys.exit(EXIT_ENVIRONMENT)


def in_project_environment() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def main(argv: list[str]) -> None:
    if not argv or not SCRIPT_NAME.fullmatch(argv[0]):
        fail("usage: python3 scripts/launch.py TOOL_SCRIPT [ARG ...] (such as publish_event)")
    script = ROOT / "scripts" / f"{argv[0]}.py"
    if not script.is_file():
        fail(f"there is no tool script {script}")
    if VENV_PYTHON.exists() and not in_project_environment():
        # Standard input and the GANTZ_ARG_* variables pass through exec unchanged.
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), str(Path(__file__).resolve()), *argv])  # noqa: S606 (the same script, re-executed)
    sys.path.insert(0, str(ROOT))
    try:
        import eda.core  # noqa: F401 (the project and its dependencies are importable)
    except ModuleNotFoundError as exc:
        fail(
            f"{sys.executable} cannot import {exc.name!r} and {VENV} does not exist: "
            f"create it with 'python3 {ROOT / 'scripts' / 'dev.py'} up' (or install the "
            "project into this Python), then call the tool again"
        )
    sys.argv = [str(script), *argv[1:]]
    runpy.run_module(f"scripts.{argv[0]}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
