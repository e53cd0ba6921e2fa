"""``python -m scripts.flower [flower options]``: Flower, but never without a login.

Flower started without ``FLOWER_BASIC_AUTH`` serves its dashboard to whoever
reaches the port: every task's arguments and the workers' controls (shut down,
resize the pool, change rate limits). So this refuses to start it without a
login, in one line, and otherwise runs ``celery -A tasks flower`` in its place
(Flower reads ``FLOWER_BASIC_AUTH`` itself). ``eda up`` generates a login.
"""

from __future__ import annotations

import os
import sys

from eda.settings import environ

#: Flower's login: ``user:password``, several separated by commas.
VARIABLE = "FLOWER_BASIC_AUTH"


def login_problem(value: str | None) -> str | None:
    """Why ``value`` is no usable login for Flower, or None when it is one."""
    if not value or not value.strip():
        return f"{VARIABLE} is unset: Flower would start with no login; set it to user:password"
    for entry in value.split(","):
        user, _, password = entry.partition(":")
        if not user.strip() or not password:
            return f"{VARIABLE} must be user:password (several separated by commas)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Refuse (exit 2) without a login; else become ``celery -A tasks flower [argv]``."""
    problem = login_problem(environ(VARIABLE))
    if problem is not None:
        print(f"flower: {problem}", file=sys.stderr)
        return 2
    arguments = sys.argv[1:] if argv is None else argv
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "tasks", "flower", *arguments])  # noqa: S606 (no shell wanted: the arguments pass as they are)
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
