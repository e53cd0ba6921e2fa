#!/usr/bin/env python3
"""The commands: ``python3 scripts/dev.py up`` runs the system, ``... test`` tests it.

``... test-rabbitmq`` runs the delivery tests again with RabbitMQ as the broker, on a
node it starts from the system's ``rabbitmq-server`` (or ``TEST_AMQP_URL``'s server).

Standard library only, so it runs on a fresh machine with nothing but Python
3.11+: it creates the virtual environment ``.venv`` in the repository, installs
the project into it when ``pyproject.toml`` changed since the last install, and
then runs the command inside it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".installed"

#: What ``test`` runs, in order; the first failure stops the run.
CHECKS = [
    ["ruff", "check", "."],
    ["ruff", "format", "--check", "."],
    ["mypy"],
    ["pytest"],
]


def ensure_environment() -> None:
    """Create .venv and install the project (with its test extra) when needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs on any python3)
        sys.exit(f"Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print("creating the virtual environment in .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    print("installing the project and its dependencies into .venv", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted + "\n")


def run_tests(extra: list[str]) -> int:
    for command in CHECKS:
        arguments = [*command, *extra] if command[0] == "pytest" else command
        print("$", " ".join(arguments), flush=True)
        code = subprocess.call([str(BIN / arguments[0]), *arguments[1:]], cwd=ROOT)
        if code != 0:
            return code
    return 0


#: Where a system's RabbitMQ keeps its start script (the one on PATH may switch user).
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def run_rabbitmq_tests(extra: list[str]) -> int:
    """The tests marked ``brokers``, with RabbitMQ as the Celery broker."""
    import shutil

    installed = RABBITMQ_SERVER.exists() or shutil.which("rabbitmq-server")
    if not (installed or os.environ.get("TEST_AMQP_URL")):
        print("test-rabbitmq needs rabbitmq-server (apt install rabbitmq-server) or TEST_AMQP_URL")
        return 1
    arguments = ["pytest", "--broker=rabbitmq", *extra]
    print("$", " ".join(arguments), flush=True)
    return subprocess.call([str(BIN / "pytest"), *arguments[1:]], cwd=ROOT)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "test", "test-rabbitmq"):
        print("usage: python3 scripts/dev.py up [options] | test [pytest options] | test-rabbitmq")
        return 2
    ensure_environment()
    if argv[0] == "test":
        return run_tests(argv[1:])
    if argv[0] == "test-rabbitmq":
        return run_rabbitmq_tests(argv[1:])
    os.chdir(ROOT)
    python = str(BIN / "python")
    os.execv(python, [python, "-m", "scripts.up", *argv[1:]])  # noqa: S606
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
