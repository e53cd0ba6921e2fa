"""``eda``: the operator's command line over the event store, the DLQ and replay.

Tables for people by default, ``--json`` for scripts. Times are RFC 3339 / ISO
8601 or a duration ago (``15m``, ``2h``, ``1d``). A mistake is one line on
stderr and exit 2 (an unknown id 3, an unreachable store 4, as with the Gantz
scripts; no broker configured 5), never a traceback. Replay and retry-all show
a progress bar; Ctrl-C stops them between two deliveries, never in the middle
of one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from eda import settings as eda_settings
from eda.core import Core
from eda.errors import EdaError, InvalidInput, NoBroker, NotFound, StoreUnavailable
from eda.summaries import DEFAULT_LIMIT, MAX_LIMIT, UNBOUNDED, history_page
from eda.times import parse_bound
from scripts import cli_render as render
from scripts.cli_progress import tracked
from scripts.gantz import EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAVAILABLE

#: Exit code of a failure that is not the caller's input.
EXIT_FAILED = 1
#: Exit code when this installation cannot dispatch: no broker is configured.
EXIT_NO_BROKER = 5
#: Exit code after Ctrl-C, as shells report SIGINT.
EXIT_INTERRUPTED = 130


def connect(settings: eda_settings.Settings | None = None) -> Core:
    """The dispatching core the commands use. Tests hand in their own core with ``obj=``."""
    import tasks  # Celery is only imported by commands that need a core

    return tasks.connect(settings)


class EdaGroup(click.Group):
    """The top-level group: turns every error into one line on stderr and an exit code."""

    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: str | None = None, **extra: Any
    ) -> NoReturn:
        extra.pop("standalone_mode", None)
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as exc:
            _fail(_one_line(exc), exc.exit_code)
        except click.Abort:
            _fail("interrupted", EXIT_INTERRUPTED)
        except NotFound as exc:
            _fail(str(exc), EXIT_NOT_FOUND)
        except InvalidInput as exc:
            _fail(str(exc), EXIT_INVALID)
        except StoreUnavailable as exc:
            _fail(str(exc), EXIT_UNAVAILABLE)
        except NoBroker as exc:
            _fail(str(exc), EXIT_NO_BROKER)
        except EdaError as exc:
            _fail(str(exc), EXIT_FAILED)
        sys.exit(result if isinstance(result, int) else 0)


def _one_line(exc: click.ClickException) -> str:
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        return f"{message} (see '{ctx.command_path} --help')"
    return message


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class TimeType(click.ParamType):
    """An option holding a point in time: ISO 8601 or a duration ago (15m, 2h, 1d)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return parse_bound(str(value), field=param.name if param and param.name else "time")
        except InvalidInput as exc:
            self.fail(exc.reason, param, ctx)


TIME = TimeType()


def core_of(ctx: click.Context) -> Core:
    """The core for this run: the one handed in (``obj=``), else :func:`connect`."""
    root = ctx.find_root()
    if not isinstance(root.obj, Core):
        root.obj = connect()
    return root.obj


def settings_of(ctx: click.Context) -> eda_settings.Settings:
    """The settings of the handed-in core, else from the environment (no store needed)."""
    obj = ctx.find_root().obj
    return obj.settings if isinstance(obj, Core) else eda_settings.load()


def console() -> Console:
    return Console(highlight=False)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def answer(as_json: bool, data: Any, show: Callable[[Console], object]) -> None:
    """Print ``data`` as JSON for scripts, or let ``show`` print it for a person."""
    if as_json:
        emit_json(data)
    else:
        show(console())


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(command)


@click.group(cls=EdaGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate the event store: events, dead letters, replay, subscriptions, MCP."""


# -- events -----------------------------------------------------------------------------------


@main.command()
@click.option("--type", "event_type", help="Only events of this type.")
@click.option("--since", type=TIME, help="At or after: ISO 8601 or a duration ago (15m).")
@click.option("--until", type=TIME, help="At or before: ISO 8601 or a duration ago.")
@click.option(
    "--limit", type=click.IntRange(1, MAX_LIMIT), default=DEFAULT_LIMIT, show_default=True
)
@click.option("--cursor", help="Continue after an earlier page (its next_cursor).")
@click.option("--oldest", is_flag=True, help="Oldest first (default: newest first).")
@json_option
@click.pass_context
def events(
    ctx: click.Context,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
    oldest: bool,
    as_json: bool,
) -> None:
    """List stored events: a summary each (eda event ID shows one in full)."""
    page = history_page(
        core_of(ctx),
        event_type,
        since,
        until,
        limit=limit,
        newest_first=not oldest,
        cursor=cursor,
        max_bytes=UNBOUNDED,
    )

    def show(out: Console) -> None:
        render.events_table(out, page.events)
        if page.next_cursor:
            out.print(f"more: eda events --cursor {page.next_cursor} (with the same filters)")

    answer(as_json, page.as_dict(), show)


@main.command()
@click.argument("event_id")
@click.option("--full", is_flag=True, help="The whole transcript: prompt, messages, results.")
@json_option
@click.pass_context
def event(ctx: click.Context, event_id: str, as_json: bool, full: bool) -> None:
    """Show one event with its deliveries, each agent run turn by turn, and tokens used."""
    core = core_of(ctx)
    stored = core.get_event(event_id)
    runs = core.transcripts(event_id, full=full)
    shown = {**stored.as_dict(), "transcripts": runs}
    answer(as_json, shown, lambda out: render.event_detail(out, stored, runs, full=full))


@main.command()
@click.argument("event_type")
@click.option("--source", default="cli", show_default=True, help="Who produced the event.")
@click.option("--subject", help="What the event is about (optional).")
@json_option
@click.pass_context
def publish(
    ctx: click.Context, event_type: str, source: str, subject: str | None, as_json: bool
) -> None:
    """Publish an event; its JSON payload is read from stdin."""
    stdin = sys.stdin
    if stdin is None or stdin.isatty():
        raise InvalidInput("payload", "pipe the JSON payload in: echo '{...}' | eda publish TYPE")
    text = stdin.read()
    if not text.strip():
        raise InvalidInput("payload", "is empty: give the event's JSON payload on stdin")
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise InvalidInput("payload", f"is not JSON ({exc})") from None
    fields = {"subject": subject} if subject else {}
    published = core_of(ctx).publish(event_type, payload, source, **fields)
    result = {
        "event_id": published.event_id,
        "stream_id": published.stream_id,
        "duplicate": published.duplicate,
    }
    answer(
        as_json, result, lambda out: out.print(f"published {event_type} as {published.event_id}")
    )


# -- dead letters -----------------------------------------------------------------------------


def letter_filters(limit: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options that choose dead letters (type, handler, limit) and ``--json``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        options: list[Callable[[Any], Any]] = [
            click.option("--type", "event_type", help="Only dead letters of this event type."),
            click.option("--handler", help="Only dead letters of this handler."),
            click.option(
                "--limit", type=click.IntRange(1, 10_000), default=limit, show_default=True
            ),
            json_option,
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@main.group()
def dlq() -> None:
    """The dead-letter queue: deliveries that failed for good."""


@dlq.command("list")
@letter_filters(limit=50)
@click.pass_context
def dlq_list(
    ctx: click.Context, event_type: str | None, handler: str | None, limit: int, as_json: bool
) -> None:
    """List dead letters, newest first."""
    page = core_of(ctx).dead_letter_page(limit, event_type, handler)
    answer(as_json, page.as_dict(), lambda out: render.dead_letters_table(out, page))


@dlq.command("show")
@click.argument("dead_letter_id")
@json_option
@click.pass_context
def dlq_show(ctx: click.Context, dead_letter_id: str, as_json: bool) -> None:
    """Show one dead letter with its traceback."""
    letter = core_of(ctx).dead_letter(dead_letter_id)
    answer(as_json, letter.as_dict(), lambda out: render.dead_letter_detail(out, letter))


@dlq.command("retry")
@click.argument("dead_letter_id")
@json_option
@click.pass_context
def dlq_retry(ctx: click.Context, dead_letter_id: str, as_json: bool) -> None:
    """Deliver a dead letter again, with a fresh retry budget."""
    result = core_of(ctx).retry_dead_letter(dead_letter_id)
    answer(
        as_json,
        result,
        lambda out: out.print(f"retried {dead_letter_id} as task {result['task_id']}"),
    )


@dlq.command("retry-all")
@letter_filters(limit=1000)
@click.option(
    "--until-empty",
    is_flag=True,
    help="Go on, batch after batch, until no matching letter is left.",
)
@click.pass_context
def dlq_retry_all(
    ctx: click.Context,
    event_type: str | None,
    handler: str | None,
    limit: int,
    until_empty: bool,
    as_json: bool,
) -> None:
    """Retry a filtered batch of dead letters (Ctrl-C stops between two)."""
    core = core_of(ctx)
    with tracked("retrying", quiet=as_json) as progress:
        report = core.retry_dead_letters(
            event_type, handler, limit, progress, until_empty=until_empty
        )
    answer(as_json, report.as_dict(), lambda out: render.retry_report(out, report))
    if report.interrupted:
        ctx.exit(EXIT_INTERRUPTED)


@dlq.command("discard")
@click.argument("dead_letter_id")
@click.option("--reason", required=True, help="Why it is dropped (kept on the delivery).")
@json_option
@click.pass_context
def dlq_discard(ctx: click.Context, dead_letter_id: str, reason: str, as_json: bool) -> None:
    """Drop a dead letter for good."""
    letter = core_of(ctx).discard_dead_letter(dead_letter_id, reason)
    answer(
        as_json,
        {"discarded": letter.id, "reason": reason},
        lambda out: out.print(f"discarded {letter.id}"),
    )


# -- replay -----------------------------------------------------------------------------------


@main.command()
@click.option("--type", "event_type", help="Only events of this type.")
@click.option("--since", type=TIME, help="At or after: ISO 8601 or a duration ago (1h).")
@click.option("--until", type=TIME, help="At or before: ISO 8601 or a duration ago.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--handler", help="Deliver to this handler only (default: the current routes).")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; enqueue nothing.")
@json_option
@click.pass_context
def replay(
    ctx: click.Context,
    event_type: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    handler: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Deliver stored events again, oldest first (Ctrl-C stops between two deliveries)."""
    core = core_of(ctx)
    if dry_run:
        report = core.replay(event_type, since, until, limit, handler, dry_run=True)
    else:
        with tracked("replaying", quiet=as_json) as progress:
            report = core.replay(event_type, since, until, limit, handler, progress=progress)
    answer(as_json, report.as_dict(), lambda out: render.replay_report(out, report))
    if report.interrupted:
        ctx.exit(EXIT_INTERRUPTED)


# -- subscriptions ----------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
def subscriptions(ctx: click.Context, as_json: bool) -> None:
    """List run-time subscriptions (routes made without a restart); see the subcommands."""
    if ctx.invoked_subcommand is not None:
        return
    found = core_of(ctx).subscriptions()
    answer(as_json, found, lambda out: render.subscriptions_table(out, found))


@subscriptions.command("subscribe")
@click.argument("patterns", nargs=-1, required=True)
@click.option("--handler", required=True, help="A registered handler or module:function.")
@json_option
@click.pass_context
def subscribe(ctx: click.Context, patterns: tuple[str, ...], handler: str, as_json: bool) -> None:
    """Route event types (alert.triggered, alert.*, *) to a handler from now on."""
    core = core_of(ctx)
    created = core.subscribe(list(patterns), handler)
    answer(
        as_json, created, lambda out: out.print(f"subscribed {handler} to {', '.join(patterns)}")
    )


@subscriptions.command("unsubscribe")
@click.argument("pattern")
@click.option("--handler", required=True)
@json_option
@click.pass_context
def unsubscribe(ctx: click.Context, pattern: str, handler: str, as_json: bool) -> None:
    """Remove one subscription."""
    if not core_of(ctx).unsubscribe(pattern, handler):
        raise NotFound("pattern", f"{handler} is not subscribed to {pattern!r}")
    answer(
        as_json,
        {"unsubscribed": {"pattern": pattern, "handler": handler}},
        lambda out: out.print(f"unsubscribed {handler} from {pattern}"),
    )


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
def destinations(ctx: click.Context, as_json: bool) -> None:
    """Destinations of the routes file, and why any is disabled (a 410 Gone)."""
    if ctx.invoked_subcommand is not None:
        return
    found = core_of(ctx).destinations()

    def show(out: Console) -> None:
        for item in found:
            why = item["disabled"]
            state = f"disabled since {why['at']} ({why['reason']})" if why else "enabled"
            out.print(f"{item['handler']}: {state}")

    answer(as_json, found, show)


@destinations.command("enable")
@click.argument("handler")
@click.pass_context
def destinations_enable(ctx: click.Context, handler: str) -> None:
    """Let a disabled destination (destination:NAME) receive deliveries again."""
    name = handler if handler.startswith("destination:") else f"destination:{handler}"
    enabled = core_of(ctx).enable_destination(name)
    console().print(f"{name} enabled" if enabled else f"{name} was not disabled")


# -- stats and MCP ----------------------------------------------------------------------------


@main.command()
@json_option
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Events per type and status, lane queue lengths, the DLQ size, and unrouted types."""
    from webhooks.mapping import load_type_map, unrouted_types  # the web's type map, not its app

    core = core_of(ctx)
    types = load_type_map(settings_of(ctx).webhook_types_path)
    found = {**core.stats(), "unrouted_types": unrouted_types(core, types)}
    answer(as_json, found, lambda out: render.stats_tables(out, found))


@main.command()
@click.option(
    "--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True
)
@click.option("--host", help="HTTP: address to listen on (default EDA_MCP_HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65_535), help="HTTP: port (default EDA_MCP_PORT).")
@click.option(
    "--gantz",
    "gantz_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The gantz.yaml to serve (default EDA_GANTZ_YAML).",
)
@click.pass_context
def mcp(
    ctx: click.Context, transport: str, host: str | None, port: int | None, gantz_path: Path | None
) -> None:
    """Serve the tools of gantz.yaml over MCP (stdio, or Streamable HTTP behind a token)."""
    from eda.gantz_yaml import read_gantz_file
    from scripts import mcp_server

    settings = settings_of(ctx)
    path = gantz_path or settings.gantz_path
    gantz = read_gantz_file(path, default_timeout=settings.tool_timeout)
    server = mcp_server.build_server(gantz)
    if transport == "stdio":
        click.echo(f"serving {len(gantz.tools)} tools of {path} over stdio", err=True)
        mcp_server.serve_stdio(server)
        return
    host, port = host or settings.mcp_host, port or settings.mcp_port
    token = settings.mcp_token.get_secret_value() if settings.mcp_token is not None else None
    mcp_server.check_exposure(host, token)
    guard = "bearer token required" if token else "no token: loopback only"
    click.echo(f"serving {len(gantz.tools)} tools at http://{host}:{port}/mcp ({guard})", err=True)
    mcp_server.serve_http(server, host, port, token, settings.mcp_allowed_hosts)


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def up(arguments: tuple[str, ...]) -> None:
    """Run the whole system (web, worker, beat, Flower) and the demo: see `eda up --help`."""
    from scripts import up as run_system

    sys.exit(run_system.main(list(arguments)))


if __name__ == "__main__":
    main()
