"""The commands the Procfile runs, so the suite measures the configuration that ships."""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: ``${NAME:-default}`` or ``${NAME}`` in a Procfile line.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^{}]*))?\}")
#: The app the Procfile's web line serves.
WEB_APP = "webhooks.wsgi:app"


def expand(line: str, values: Mapping[str, str]) -> list[str]:
    """A Procfile line as arguments: ``${NAME:-default}`` is ``values[NAME]`` or its default.

    Defaults may themselves be variables (``${PORT:-${EDA_WEB_PORT:-8000}}``), as in a shell:
    the innermost are expanded first.
    """
    text, before = line, None
    while text != before:
        before, text = text, _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(2) or ""), text)
    return shlex.split(text)


@dataclass(frozen=True)
class Procfile:
    """The ``web``, ``worker``, ``relay`` and ``beat`` lines, variables at their defaults."""

    web: str
    worker: str
    relay: str | None = None
    beat: str | None = None

    def gunicorn(self, app: str, port: int) -> list[str]:
        """The web line's gunicorn arguments, bound to ``port``, serving ``app``."""
        words = expand(self.web, {"EDA_WEB_PORT": str(port)})
        return [app if word == WEB_APP else word for word in words[1:]]

    def celery_worker(self) -> list[str]:
        """The worker line's celery arguments (``-A tasks worker ...``)."""
        return expand(self.worker, {})[1:]

    def relay_command(self) -> list[str] | None:
        """The relay line's arguments, ``python`` being this interpreter; None without one."""
        return None if self.relay is None else command(self.relay)

    def beat_command(self) -> list[str] | None:
        """The beat line's arguments (``celery`` run by this interpreter); None without one."""
        return None if self.beat is None else command(self.beat)

    def option(self, short: str, long: str) -> str | None:
        """The value of a worker option (``-P``/``--pool``), or None when the line omits it."""
        words = self.celery_worker()
        for index, word in enumerate(words):
            if word in (short, long) and index + 1 < len(words):
                return words[index + 1]
            if word.startswith(long + "="):
                return word.split("=", 1)[1]
        return None

    @property
    def pool(self) -> str:
        return self.option("-P", "--pool") or "prefork"

    @property
    def concurrency(self) -> int:
        return int(self.option("-c", "--concurrency") or 2)


def command(line: str) -> list[str]:
    """A Procfile line as a command of this interpreter (``python``, ``celery`` or a module)."""
    words = expand(line, {})
    if words[0] in ("python", "python3"):
        return [sys.executable, *words[1:]]
    if words[0] in ("celery", "gunicorn"):
        return [sys.executable, "-m", *words]
    return words


def read_procfile(path: Path = ROOT / "Procfile") -> Procfile:
    """The Procfile's ``web``, ``worker``, ``relay`` and ``beat`` lines."""
    lines: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        name, _, command = raw.partition(":")
        if command and not name.lstrip().startswith("#"):
            lines[name.strip()] = command.strip()
    return Procfile(lines["web"], lines["worker"], lines.get("relay"), lines.get("beat"))


def without(arguments: list[str], *flags: str, valued: tuple[str, ...] = ()) -> list[str]:
    """``arguments`` without the given flags, and without ``valued`` options and their values."""
    kept: list[str] = []
    skip = False
    for word in arguments:
        if skip:
            skip = False
        elif word in valued:
            skip = True
        elif word not in flags:
            kept.append(word)
    return kept
