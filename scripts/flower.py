"""``python -m scripts.flower [flower options]``: Flower, but never without a login.

Flower started without ``FLOWER_BASIC_AUTH`` serves its dashboard to whoever
reaches the port: every task's arguments and the workers' controls (shut down,
resize the pool, change rate limits). So this refuses to start it without a
login, in one line, and otherwise runs ``celery -A tasks flower`` in its place
(Flower reads ``FLOWER_BASIC_AUTH`` itself). ``eda up`` generates a login.

Flower asks the workers who they are once, as it starts, and again only when
someone asks it to refresh: started beside a worker that is not up yet (as
``eda up`` and the Procfile do), its workers list stayed empty. So it waits,
up to ``EDA_FLOWER_WORKER_WAIT`` seconds, for a worker to answer first.
"""

from __future__ import annotations

import os
import sys
import time

from eda.settings import environ, load

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


def wait_for_a_worker(timeout: float) -> bool:
    """True once a worker answers a ping on the broker; False after ``timeout`` seconds."""
    from tasks import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if app.control.ping(timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
                return True
        except Exception:  # the broker is not up yet: Flower would not find a worker either
            time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    """Refuse (exit 2) without a login; else become ``celery -A tasks flower [argv]``."""
    problem = login_problem(environ(VARIABLE))
    if problem is not None:
        print(f"flower: {problem}", file=sys.stderr)
        return 2
    wait = load().flower_worker_wait
    if wait and not wait_for_a_worker(wait):
        print(f"flower: no worker answered within {wait:g} s; starting without", file=sys.stderr)
    arguments = sys.argv[1:] if argv is None else argv
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "tasks", "flower", *arguments])  # noqa: S606 (no shell wanted: the arguments pass as they are)
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
