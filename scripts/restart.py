"""Keep one process running: start it again when it exits, with a back-off (``eda up``'s).

``python -m scripts.restart NAME -- COMMAND`` runs COMMAND through the shell, as
a Procfile line is run; when it exits without having been told to stop, it is
started again after 1 s, then 2, 4, ... up to 30 s (back to 1 s after a minute
of running). SIGTERM and SIGINT stop it and its command. In production a
supervisor does this (a systemd unit per process: see the README).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

#: Seconds before the first restart, and the longest wait between two.
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
#: A process that ran this long is not crash-looping: its next restart waits FIRST_DELAY.
STEADY = 60.0


def supervise(name: str, command: str) -> int:
    """Run ``command`` until told to stop; its last exit code."""
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(number: int, _: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(number)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
    delay, code = FIRST_DELAY, 0
    while not stopping.is_set():
        started = time.monotonic()
        child = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"])
        code = child.wait()
        if stopping.is_set():
            break
        if time.monotonic() - started > STEADY:
            delay = FIRST_DELAY
        print(
            f"restart: {name} exited with {code}; starting it again in {delay:g} s",
            file=sys.stderr,
            flush=True,
        )
        stopping.wait(delay)
        delay = min(delay * 2, MAX_DELAY)
    return code


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m scripts.restart NAME -- COMMAND", file=sys.stderr)
        return 2
    return supervise(argv[0], " ".join(argv[2:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
