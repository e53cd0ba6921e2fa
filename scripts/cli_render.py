"""How the ``eda`` command line shows things to a person: Rich tables and panels.

Every function takes what the core returned and prints it; nothing here reads
the store. ``--json`` output does not come through here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from eda.core import ReplayReport, RetryReport
from eda.dead_letters import DeadLetter, DeadLetterPage
from eda.flow import usd
from eda.store import StoredEvent

#: Columns from which events are shown as a table (below: two lines an event).
WIDE_TABLE = 120
#: A width no table reaches: what a table would take if nothing were cut.
UNBOUNDED = 10_000
#: Longest text shown in a table cell before it is cut (the JSON output keeps it all).
CELL = 80
#: Statuses and the colour they are shown in.
COLOURS = {
    "succeeded": "green",
    "processed": "green",
    "skipped": "dim",
    "ignored": "dim",
    "queued": "cyan",
    "pending": "cyan",
    "running": "yellow",
    "processing": "yellow",
    "retrying": "yellow",
    "dead": "red",
    "failed": "red",
    "unrouted": "magenta",
    "stopped": "magenta",
    "blocked": "red",
}


def status(text: str) -> Text:
    return Text(text, style=COLOURS.get(text, ""))


def short(value: Any, limit: int = CELL) -> str:
    """One line of at most ``limit`` characters (JSON for anything but text)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def events_table(console: Console, events: Sequence[Mapping[str, Any]]) -> None:
    """Event summaries: a table where it fits, else two lines an event (80 columns, pipes)."""
    if not events:
        console.print("no events match")
        return
    if console.width >= WIDE_TABLE:
        table = Table(title="Events", title_justify="left")
        for column in ("time", "id", "type", "source", "status", "handlers"):
            table.add_column(column, no_wrap=column in ("id", "time", "status"))
        for item in events:
            table.add_row(
                item["time"],
                item["id"],
                item["type"],
                item["source"],
                status(item["status"]),
                handlers_text(item["handlers"]),
            )
        console.print(table)
        return
    for item in events:
        # id and status first: what a reader copies and scans; the rest wraps beneath.
        head = Text.assemble(item["id"], "  ", status(item["status"]), "  ", item["time"][:19])
        body = Text.assemble(
            "  ",
            (item["type"], "bold"),
            f" from {item['source']}",
            " → ",
            handlers_text(item["handlers"]),
        )
        console.print(head, overflow="fold")
        console.print(body, overflow="fold")


def handlers_text(handlers: Mapping[str, str]) -> Text:
    """``Handler=status, …`` with each status in its colour; ``-`` when none."""
    if not handlers:
        return Text("-")
    parts: list[Any] = []
    for index, (handler, state) in enumerate(handlers.items()):
        parts.extend([", " if index else "", f"{handler}=", status(state)])
    return Text.assemble(*parts)


def event_detail(
    console: Console,
    stored: StoredEvent,
    transcripts: Mapping[str, Any] | None = None,
    *,
    full: bool = False,
) -> None:
    """The envelope, the payload, then each delivery with what its handler did and, for an
    agent, each run turn by turn; ``full`` adds what each run sent and each turn whole."""
    event = stored.event
    envelope = Table.grid(padding=(0, 2))
    envelope.add_column(style="bold")
    envelope.add_column()
    fields: list[tuple[str, Any]] = [
        ("id", event.id),
        ("type", event.type),
        ("source", event.source),
        ("time", event.timestamp),
        ("status", status(stored.status)),
        ("blocked", stored.blocked),
        ("depth", str(stored.depth) if stored.depth else None),
        ("stream id", stored.stream_id),
        ("subject", event.subject),
        ("correlation id", event.correlation_id),
        ("causation id", event.causation_id),
        ("dedupe key", event.dedupe_key),
    ]
    for name, value in fields:
        if value is not None:
            envelope.add_row(name, value)
    if stored.acknowledged:
        ack = stored.acknowledged
        envelope.add_row(
            "acknowledged", f"{ack.get('status')} at {ack.get('at')}: {ack.get('reason')}"
        )
    payload = json.dumps(event.payload, indent=2, ensure_ascii=False)
    console.print(
        Panel(Group(envelope, Text("payload", style="bold"), Text(payload)), title="Event")
    )
    if not stored.deliveries:
        console.print("no deliveries yet")
    for handler, delivery in stored.deliveries.items():
        delivery_panel(console, handler, delivery)
        for run in (transcripts or {}).get(handler, []):
            console.print(transcript_table(handler, run))
            if full:
                console.print(sent_panel(handler, run))
                for number, turn in enumerate(run.get("turns") or [], start=1):
                    console.print(turn_panel(number, turn))


def transcript_table(handler: str, run: Mapping[str, Any]) -> Table:
    """One agent run, a row a turn: attempt, stop reason, tokens, ms, tool calls, text."""
    sent = run.get("sent") or {}
    title = f"{handler}, run {run.get('run')}: {sent.get('model')}, tools {sent.get('tools')}"
    table = Table("turn", "attempt", "stop", "tokens", "ms", "tool calls", "text", title=title)
    for number, turn in enumerate(run.get("turns") or [], start=1):
        calls = "; ".join(
            f"{c.get('name')}{' (refused)' if c.get('refused') else ''} "
            f"{short(c.get('input', {}), 40)} -> {short(c.get('result', ''), 40)}"
            for c in turn.get("tool_calls") or []
        )
        table.add_row(
            str(number),
            str(turn.get("attempt")),
            str(turn.get("stop_reason")),
            tokens(turn.get("usage") or {}),
            str(turn.get("duration_ms")),
            calls,
            short(turn.get("text", ""), 60),
        )
    return table


def sent_panel(handler: str, run: Mapping[str, Any]) -> Panel:
    """What a run sent first, whole: the system prompt, then each message (the event and
    its enrichment)."""
    sent = run.get("sent") or {}
    parts: list[Any] = [Text("system prompt", style="bold"), Text(content_text(sent.get("system")))]
    for entry in sent.get("messages") or []:
        parts += [
            Text(str(entry.get("role")), style="bold"),
            Text(content_text(entry.get("content"))),
        ]
    return Panel(Group(*parts), title=f"{handler}, run {run.get('run')}: sent")


def turn_panel(number: int, turn: Mapping[str, Any]) -> Panel:
    """One turn whole: the model's text, then each tool call's input and result."""
    parts: list[Any] = [Text(str(turn.get("text") or ""))]
    for call in turn.get("tool_calls") or []:
        refused = " (refused)" if call.get("refused") else ""
        parts += [
            Text(f"{call.get('name')}{refused}", style="bold"),
            Text(json.dumps(call.get("input"), indent=2, ensure_ascii=False, default=str)),
            Text(str(call.get("result", ""))),
        ]
    return Panel(Group(*parts), title=f"turn {number}, attempt {turn.get('attempt')}")


def content_text(content: Any) -> str:
    """A prompt or message's content as text: a string, or its blocks' text (others as JSON)."""
    if content is None or isinstance(content, str):
        return content or ""
    blocks = content if isinstance(content, list) else [content]
    return "\n\n".join(
        block["text"]
        if isinstance(block, dict) and isinstance(block.get("text"), str)
        else json.dumps(block, indent=2, ensure_ascii=False, default=str)
        for block in blocks
    )


def delivery_panel(console: Console, handler: str, delivery: Mapping[str, Any]) -> None:
    parts: list[Any] = []
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("status", status(str(delivery.get("status", "?"))))
    for key in ("attempts", "task_id", "replay", "error", "created_at", "updated_at"):
        if delivery.get(key) not in (None, ""):
            facts.add_row(key.replace("_", " "), str(delivery[key]))
    parts.append(facts)
    history = Table("at", "status", "reason", title="history", title_justify="left")
    for change in delivery.get("history") or []:
        history.add_row(
            change.get("at", ""), status(change.get("status", "")), change.get("reason", "")
        )
    parts.append(history)
    parts.append(attempts_table(delivery))
    outcome = delivery.get("outcome")
    if isinstance(outcome, Mapping):
        parts.extend(outcome_parts(outcome))
    console.print(Panel(Group(*parts), title=f"Delivery to {handler}"))


def attempts_table(delivery: Mapping[str, Any]) -> Table:
    """Every attempt kept, run by run: who ran it, when, how long, and how it ended."""
    table = Table(
        "run",
        "attempt",
        "worker",
        "started",
        "ms",
        "status",
        "error",
        title="attempts",
        title_justify="left",
    )
    for run in delivery.get("runs") or []:
        for attempt in run.get("attempts") or []:
            error = (attempt.get("error") or {}).get("message", "")
            table.add_row(
                f"{run['number']}{' (replay)' if run.get('replay') else ''}",
                f"{attempt['number']}"
                + (f" (started {attempt['starts']} times)" if attempt.get("starts", 1) > 1 else ""),
                attempt.get("worker", ""),
                attempt.get("started_at", ""),
                f"{attempt['duration_ms']:.0f}" if attempt.get("duration_ms") is not None else "",
                status(attempt.get("status") or "running"),
                error,
            )
    totals = delivery.get("totals") or {}
    if totals:
        table.caption = ", ".join(
            f"{key.replace('_', ' ')} {value:g}" for key, value in totals.items()
        )
    return table


def outcome_parts(outcome: Mapping[str, Any]) -> list[Any]:
    """What a handler reported: an agent's run (model, tokens, tool calls, text), or its JSON."""
    if "agent" not in outcome:
        return [Text("outcome", style="bold"), Text(json.dumps(outcome, indent=2, default=str))]
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    for key in ("agent", "model", "backend", "outcome", "stop_reason", "turns"):
        if outcome.get(key) is not None:
            summary.add_row(key.replace("_", " "), str(outcome[key]))
    usage = outcome.get("usage") or {}
    if usage:
        summary.add_row("tokens", tokens(usage))
    parts: list[Any] = [Text("agent", style="bold"), summary]
    calls = outcome.get("tool_calls") or []
    if calls:
        parts.append(tool_calls_table(calls))
    if outcome.get("text"):
        parts.extend([Text("text", style="bold"), Text(str(outcome["text"]))])
    return parts


def tokens(usage: Mapping[str, Any]) -> str:
    names = {
        "input_tokens": "in",
        "output_tokens": "out",
        "cache_creation_input_tokens": "cache write",
        "cache_read_input_tokens": "cache read",
    }
    return ", ".join(f"{label} {usage[key]}" for key, label in names.items() if usage.get(key))


def tool_calls_table(calls: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(title="tool calls", title_justify="left")
    for column in ("tool", "input", "result", "ms"):
        table.add_column(column)
    for call in calls:
        flag = " (refused)" if call.get("refused") else " (error)" if call.get("is_error") else ""
        table.add_row(
            Text(f"{call.get('name', '?')}{flag}", style="red" if flag else ""),
            short(call.get("input", {}), 60),
            short(call.get("result", ""), 60),
            str(call.get("duration_ms", "")),
        )
    return table


def fits(console: Console, table: Table) -> bool:
    """Whether ``table`` shows every cell whole at the console's width (rich would cut some)."""
    natural = console.measure(table, options=console.options.update(width=UNBOUNDED))
    return natural.maximum <= console.width


def lines(console: Console, title: str, entries: Iterable[tuple[Text | str, ...]]) -> None:
    """The narrow form of a table: its title, then each entry's lines, folded, never cut."""
    console.print(Text(title, style="bold"))
    for entry in entries:
        for number, line in enumerate(entry):
            console.print(Text.assemble("  " if number else "", line), overflow="fold")


def dead_letters_table(console: Console, page: DeadLetterPage) -> None:
    """A table where it fits, else three lines a letter, its id whole on the first; then
    how many more match."""
    letters = page.letters
    if not letters:
        console.print("the dead-letter queue is empty")
        return
    table = Table(title="Dead letters", title_justify="left")
    for column in ("id", "event type", "handler", "error", "attempts", "last failure"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            letter.id,
            letter.event_type,
            letter.handler,
            letter_error(letter),
            str(letter.attempts),
            letter.last_failure_at,
        )
    if fits(console, table):
        console.print(table)
    else:
        lines(
            console,
            "Dead letters",
            (
                (
                    letter.id,
                    f"{letter.event_type}, {letter.attempts} attempts, "
                    f"last {letter.last_failure_at}",
                    letter_error(letter),
                )
                for letter in letters
            ),
        )
    if page.more:
        console.print(f"{page.more} more: raise --limit, or narrow with --type or --handler")


def letter_error(letter: DeadLetter) -> str:
    return short(f"{letter.error_class.rsplit('.', 1)[-1]}: {letter.error}", 60)


def dead_letter_detail(console: Console, letter: DeadLetter) -> None:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for key, value in letter.as_dict().items():
        if key != "traceback":
            facts.add_row(key.replace("_", " "), str(value))
    console.print(
        Panel(
            Group(facts, Text("traceback", style="bold"), Text(letter.traceback)),
            title="Dead letter",
        )
    )


def subscriptions_table(console: Console, subscriptions: list[dict[str, Any]]) -> None:
    if not subscriptions:
        console.print("no subscriptions")
        return
    table = Table("pattern", "handler", "since", title="Subscriptions", title_justify="left")
    for item in subscriptions:
        table.add_row(item["pattern"], item["handler"], item.get("created_at", ""))
    if fits(console, table):
        console.print(table)
        return
    entries = (
        (f"{item['pattern']} → {item['handler']}", f"since {item.get('created_at', '')}")
        for item in subscriptions
    )
    lines(console, "Subscriptions", entries)


def events_by_type(console: Console, by_type: Mapping[str, Mapping[str, int]]) -> None:
    """A table of types by statuses where it fits, else a line a type with its counts."""
    if not by_type:
        console.print("no events stored")
        return
    title = "Events by type and status (newest)"
    statuses = sorted({name for counts in by_type.values() for name in counts})
    table = Table("type", *statuses, title=title, title_justify="left")
    for event_type, counts in sorted(by_type.items()):
        table.add_row(event_type, *(str(counts.get(name, 0)) for name in statuses))
    if fits(console, table):
        console.print(table)
        return
    entries = (
        (event_type, ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))
        for event_type, counts in sorted(by_type.items())
    )
    lines(console, title, entries)


def stats_tables(console: Console, stats: Mapping[str, Any]) -> None:
    events_by_type(console, stats.get("events", {}))
    totals = Table.grid(padding=(0, 2))
    totals.add_column(style="bold")
    totals.add_column(justify="right")
    for key in ("stored", "pending", "dead_letters"):
        totals.add_row(key.replace("_", " "), str(stats.get(key, 0)))
    for name, count in (stats.get("statuses") or {}).items():
        totals.add_row(f"{name} (newest)", str(count))
    relay = stats.get("relay") or {}
    if relay:
        alive = ", ".join(relay.get("alive") or []) or "none alive"
        totals.add_row(
            "relay queue", f"{relay.get('queue', 0)} (oldest {relay.get('oldest_age_s', 0)} s)"
        )
        totals.add_row("relays", alive)
    if "workers" in stats:
        totals.add_row("workers", ", ".join(stats["workers"]) or "none alive")
    stuck = stats.get("stuck") or {}
    totals.add_row(
        "stuck", ", ".join(f"{n} {status}" for status, n in sorted(stuck.items())) or "none"
    )
    _flow_rows(totals, stats.get("flow") or {})
    console.print(totals)
    lanes = stats.get("lanes") or {}
    if lanes:
        lane_table = Table("lane", "waiting", title="Lanes", title_justify="left")
        for lane, waiting in sorted(lanes.items()):
            lane_table.add_row(lane, str(waiting))
        console.print(lane_table)
    unrouted = stats.get("unrouted_types") or []
    if unrouted:
        console.print("webhook types no route sends to a handler: " + ", ".join(unrouted))
    unconsumed = stats.get("unconsumed_types") or []
    if unconsumed:
        console.print("types agents publish that nothing consumes: " + ", ".join(unconsumed))


def replay_report(console: Console, report: ReplayReport) -> None:
    if report.dry_run:
        table = Table("event", "type", "handler", title="Would replay", title_justify="left")
        for item in report.items:
            table.add_row(item["event_id"], item["type"], item["handler"])
        if report.items:
            console.print(table)
        console.print(
            f"dry run: would replay {report.deliveries} deliveries of {report.events} of "
            f"{report.matched} events"
        )
    else:
        verb = "interrupted after replaying" if report.interrupted else "replayed"
        console.print(
            f"{verb} {report.deliveries} deliveries of {report.events} of {report.matched} events"
        )
    if report.left:
        console.print(
            f"{report.left} more matched: run again with --since {report.next_since} "
            "(or raise --limit)"
        )


def retry_report(console: Console, report: RetryReport) -> None:
    verb = "interrupted after retrying" if report.interrupted else "retried"
    console.print(f"{verb} {len(report.retried)} dead letters")
    if report.left:
        console.print(f"{report.left} matching dead letters left: run again, or with --until-empty")


def _flow_rows(totals: Table, flow: Mapping[str, Any]) -> None:
    """Slots in use per concurrency scope, deliveries waiting per handler, budgets' use."""
    for scope, use in sorted((flow.get("concurrency") or {}).items()):
        totals.add_row(
            f"slots {scope}", f"{use['running']} of {use['limit']}, {use['waiting']} waiting"
        )
    for handler, holds in sorted((flow.get("waiting") or {}).items()):
        totals.add_row(
            f"waiting {handler}", ", ".join(f"{n} {hold}" for hold, n in sorted(holds.items()))
        )
    for agent, budget in sorted((flow.get("budgets") or {}).items()):
        totals.add_row(f"budget {agent}", _budget_use(budget))


def _budget_use(budget: Mapping[str, Any]) -> str:
    """An agent's use of its daily budget: tokens, cost, or both."""
    parts = []
    if budget.get("tokens_per_day"):
        parts.append(f"{budget.get('spent', 0)} of {budget['tokens_per_day']} tokens")
    if budget.get("cost_per_day"):
        parts.append(f"{usd(budget.get('cost') or 0)} of {usd(budget['cost_per_day'])}")
    return ", ".join(parts) + " today"
