"""Run the whole system: ``python3 scripts/dev.py up`` (or ``eda up``).

Starts the embedded Redis when ``REDIS_URL`` is unset, then every process of
the ``Procfile`` (web, worker, beat, flower) under honcho, waits until each is
ready, sends the demo through the real HTTP endpoints (unless ``--no-demo``),
prints what happened and where everything is, and runs until Ctrl-C, which
stops every process. Secrets the operator did not set (webhook secrets, the
admin token, Flower's login) are generated once into ``.data/up.env`` (mode
0600) and reused by later runs; they are never printed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

from honcho.environ import parse_procfile
from honcho.manager import Manager

from eda.errors import EdaError
from eda.redis_server import redis_url, shown_url
from eda.settings import ROOT, Settings, environ, load

#: Seconds each process has to become ready.
READY_TIMEOUT = 90.0


def generated_secrets(settings: Settings) -> dict[str, str]:
    """Values the system needs and the operator did not set, kept in ``.data/up.env``."""
    path = settings.data_dir / "up.env"
    kept: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, value = line.partition("=")
            if value:
                kept[name.strip()] = value.strip()
    wanted = {
        "GITHUB_WEBHOOK_SECRET": lambda: secrets.token_hex(20),
        "STRIPE_WEBHOOK_SECRET": lambda: "whsec_" + secrets.token_hex(16),
        "EDA_WEBHOOK_SECRET_EVENTS": lambda: "whsec_" + b64encode(secrets.token_bytes(24)).decode(),
        "EDA_ADMIN_TOKEN": lambda: secrets.token_urlsafe(24),
        "FLOWER_BASIC_AUTH": lambda: "admin:" + secrets.token_urlsafe(12),
    }
    configured = {
        "GITHUB_WEBHOOK_SECRET": settings.webhook_secret("github"),
        "STRIPE_WEBHOOK_SECRET": settings.webhook_secret("stripe"),
        "EDA_WEBHOOK_SECRET_EVENTS": settings.webhook_secret("events"),
        "EDA_ADMIN_TOKEN": settings.admin_token.get_secret_value()
        if settings.admin_token
        else None,
        "FLOWER_BASIC_AUTH": environ("FLOWER_BASIC_AUTH"),  # Flower's own, not a setting
    }
    values = {name: configured[name] or kept.get(name) or make() for name, make in wanted.items()}
    generated = {k: v for k, v in values.items() if not configured[k]}
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as secrets_file:  # created private, never world-readable
        secrets_file.write("".join(f"{k}={v}\n" for k, v in generated.items()))
    path.chmod(0o600)
    return values


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def answers(url: str, auth: str | None = None, *, non_empty: bool = False) -> bool:
    """True when ``url`` answers 200 (and, with ``non_empty``, a body other than ``{}``)."""
    headers = {"Authorization": f"Basic {b64encode(auth.encode()).decode()}"} if auth else {}
    try:
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (our own http URL)
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 (loopback)
            body = response.read().strip()
            return bool(response.status == 200 and not (non_empty and body in (b"", b"{}")))
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(web: str, flower: str, flower_auth: str) -> None:
    """Block until the web app, a worker and Flower answer; RuntimeError naming the laggard."""
    from tasks import app

    checks = {
        "web": lambda: answers(f"{web}/readyz"),
        "worker": lambda: bool(app.control.ping(timeout=1.0)),
        # Ready once it lists the worker (its inspection at start takes a moment).
        "flower": lambda: answers(f"{flower}/api/workers", flower_auth, non_empty=True),
    }
    deadline = time.monotonic() + READY_TIMEOUT
    for name, check in checks.items():
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready in {READY_TIMEOUT:g} s")
            time.sleep(0.3)
        print(f"up: {name} is ready", flush=True)


def run_demo(web: str, values: dict[str, str]) -> None:
    from scripts import demo
    from tasks import app
    from tasks.enqueue import lane_table

    print("up: sending the demo through the real HTTP endpoints", flush=True)
    sent = demo.send(web, values)
    table = lane_table(app)
    lanes = {
        t: table.resolve(t)
        for t in ["code.pushed", "payment.failed", "alert.triggered", "demo.failure"]
    }
    print(demo.summary(web, values["EDA_ADMIN_TOKEN"], sent, lanes), flush=True)


def announce(web: str, flower: str, settings: Settings, dry_run: bool) -> None:
    print(
        f"\nWebhooks:   {web}/webhooks/github | /webhooks/stripe | /webhooks/slack | "
        f"/webhooks/<source> | {web}/events (CloudEvents)\n"
        f"Admin API:  {web}/api/ (Bearer token: EDA_ADMIN_TOKEN in {settings.data_dir}/up.env)\n"
        f"OpenAPI:    {web}/api/openapi.json\n"
        f"Flower:     {flower} (login: FLOWER_BASIC_AUTH in {settings.data_dir}/up.env)\n"
        f"CLI:        .venv/bin/eda events | eda dlq list | eda stats\n"
        + (
            "Agents:     DRY RUN: no ANTHROPIC_API_KEY, so agents record the request "
            "they would send instead of calling the model.\n"
            if dry_run
            else ""
        )
        + "Press Ctrl-C to stop everything.",
        flush=True,
    )


def after_start(
    manager: Manager, web: str, flower: str, values: dict[str, str], settings: Settings, demo: bool
) -> None:
    """Readiness, demo and summary, beside honcho's loop; stops everything on failure."""
    try:
        wait_ready(web, flower, values["FLOWER_BASIC_AUTH"])
        if demo:
            run_demo(web, values)
        from agents.backend import has_credentials  # the agents' own test, one place

        announce(web, flower, settings, dry_run=not has_credentials())
    except Exception as exc:
        print(f"up: {exc}; stopping", file=sys.stderr, flush=True)
        manager.returncode = 1
        manager.terminate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eda up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-demo", action="store_true", help="start, but send no demo")
    parser.add_argument("--web-port", type=int, default=8000)
    parser.add_argument("--flower-port", type=int, default=5555)
    args = parser.parse_args(argv)
    for port in (args.web_port, args.flower_port):
        if not port_free(port):
            parser.error(f"port {port} is in use (choose another with --web-port/--flower-port)")
    try:
        settings = load()
        url = redis_url(settings)
    except EdaError as exc:
        print(f"eda up: {exc}", file=sys.stderr)
        return 1
    values = generated_secrets(settings)
    # The Procfile's commands (gunicorn, celery) live beside this interpreter, in .venv/bin.
    path = os.pathsep.join([str(Path(sys.executable).parent), environ("PATH") or ""])
    env = {
        **os.environ,
        "PATH": path,
        **values,
        "EDA_WEB_PORT": str(args.web_port),
        # The Procfile's web reads $PORT first, as platforms hand it over: ours wins here.
        "PORT": str(args.web_port),
        "EDA_FLOWER_PORT": str(args.flower_port),
        "EDA_DATA_DIR": str(settings.data_dir),
    }
    # REDIS_URL is passed on only as the operator set it: without it every process finds the
    # embedded server and its password in EDA_DATA_DIR, and no environment carries the password.
    shown = shown_url(url)  # a password in REDIS_URL is never printed
    print(f"up: event store at {shown} (data in {settings.data_dir}/redis)", flush=True)
    manager = Manager()
    procfile = parse_procfile((ROOT / "Procfile").read_text())
    for name, process in procfile.processes.items():
        # One process exiting (a worker that lost Redis, say) is started again with a
        # back-off, instead of honcho stopping them all.
        supervised = f"{sys.executable} -m scripts.restart {name} -- {process}"
        manager.add_process(name, supervised, env=env, cwd=str(ROOT))
    web = f"http://127.0.0.1:{args.web_port}"
    flower = f"http://127.0.0.1:{args.flower_port}"
    threading.Thread(
        target=after_start,
        args=(manager, web, flower, values, settings, not args.no_demo),
        daemon=True,
    ).start()
    manager.loop()
    return int(manager.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
