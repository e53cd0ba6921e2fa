"""The Gantz scripts publish_event, get_events and ack_event, run as Gantz runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from eda import settings as eda_settings
from eda.errors import InvalidInput
from eda.event import Event
from eda.redis_server import free_port
from eda.settings import Settings
from eda.store import ACK_STATUSES, EventStore
from scripts.gantz import arguments, given, whole_number

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = re.compile(r"\{\{(\w+)\}\}")


@dataclass
class Outcome:
    """What a script did: its exit code, its JSON answer, and its JSON error."""

    code: int
    stdout: str
    stderr: str

    @property
    def answer(self) -> Any:
        assert self.code == 0, self.stderr
        assert self.stderr == ""
        return json.loads(self.stdout)

    def error(self, code: int) -> dict[str, Any]:
        """The JSON error of a failed run, which must be all there is on stderr."""
        assert self.code == code, (self.code, self.stdout, self.stderr)
        assert self.stdout == ""
        error: dict[str, Any] = json.loads(self.stderr)  # one JSON object: no traceback
        assert set(error) == {"error", "field", "message"}
        return error


Runner = Callable[..., Outcome]


@pytest.fixture
def script_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """The environment of a script: the test's Redis and prefix, and nothing from Gantz."""
    return {
        "PATH": eda_settings.environ("PATH", "/usr/bin:/bin") or "/usr/bin:/bin",
        "REDIS_URL": str(settings.redis_url),
        "EDA_PREFIX": settings.prefix,
        "EDA_DATA_DIR": str(tmp_path / "data"),  # never the repository's own
        "PYTHONDONTWRITEBYTECODE": "1",
    }


@pytest.fixture
def run(script_env: dict[str, str]) -> Runner:
    """Run ``scripts/<name>`` from the repository root with the venv's python."""

    def run_script(
        name: str,
        *args: str,
        stdin: str | None = None,
        tty: bool = False,
        env: dict[str, str] | None = None,
    ) -> Outcome:
        command = [sys.executable, f"scripts/{name}", *args]
        # This checkout's code, not an installed copy's (as the test workers run).
        environment = {**script_env, "PYTHONPATH": str(ROOT), **(env or {})}
        if tty:
            return run_on_a_terminal(command, environment)
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=environment,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return Outcome(result.returncode, result.stdout, result.stderr)

    return run_script


def run_on_a_terminal(command: list[str], env: dict[str, str]) -> Outcome:
    """Run with stdin a terminal, where reading it would wait for a person forever."""
    leader, follower = os.openpty()
    try:
        result = subprocess.run(
            command, cwd=ROOT, env=env, stdin=follower, capture_output=True, text=True, timeout=30
        )
    finally:
        os.close(follower)
        os.close(leader)
    return Outcome(result.returncode, result.stdout, result.stderr)


@pytest.fixture
def store(settings: Settings, client: Any) -> EventStore:
    return EventStore(client, settings)


# -- scripts.gantz: the conventions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("{{since}}", None),
        ("{{ since }}", None),
        (" {{event_type}}\n", None),
        ("a.b", "a.b"),
        ("  a.b ", "a.b"),
        ("since {{since}}", "since {{since}}"),
        ("{{}}", "{{}}"),
    ],
)
def test_given_treats_empty_and_unreplaced_templates_as_not_given(
    value: str | None, expected: str | None
) -> None:
    assert given(value) == expected


def test_arguments_fill_in_what_was_not_given_and_check_what_is_required() -> None:
    assert arguments(["a.b", "{{source}}"], ("event_type", "source"), required=1) == ["a.b", None]
    assert arguments([], ("event_type", "since")) == [None, None]
    with pytest.raises(InvalidInput) as caught:
        arguments(["{{event_id}}"], ("event_id", "status"), required=1)
    assert (caught.value.field, caught.value.reason) == ("event_id", "is required")
    with pytest.raises(InvalidInput) as caught:
        arguments(["a", "b", "c"], ("event_id", "status"))
    assert caught.value.field == "arguments"
    assert "at most 2 (event_id, status), got 3" in caught.value.reason


def test_whole_number_reads_integers_and_names_the_field_otherwise() -> None:
    assert whole_number(None, "limit", 100) == 100
    assert whole_number("7", "limit", 100) == 7
    with pytest.raises(InvalidInput) as caught:
        whole_number("7.5", "limit", 100)
    assert (caught.value.field, caught.value.reason) == ("limit", "'7.5' is not a whole number")


# -- publish_event.py --------------------------------------------------------------------------


def test_publish_reads_the_payload_from_stdin_and_prints_the_stored_event(
    run: Runner, store: EventStore
) -> None:
    event = run("publish_event.py", "monitor.heartbeat", "monitoring", stdin='{"severity": "high"}')
    published = event.answer
    assert published["type"] == "monitor.heartbeat"
    assert published["source"] == "monitoring"
    assert published["payload"] == {"severity": "high"}
    assert published["status"] == "unrouted"  # stored, then dispatched: no route takes it
    assert published["deliveries"] == []
    assert store.get(published["id"]).as_dict() == published


@pytest.mark.parametrize("tty", [False, True], ids=["stdin empty", "stdin a terminal"])
def test_publish_falls_back_to_gantz_arg_payload(run: Runner, tty: bool) -> None:
    outcome = run(
        "publish_event.py",
        "code.pushed",
        "github",
        tty=tty,
        env={"GANTZ_ARG_PAYLOAD": '{"ref": "main"}'},
    )
    assert outcome.answer["payload"] == {"ref": "main"}


def test_publish_prefers_stdin_to_the_environment(run: Runner) -> None:
    outcome = run(
        "publish_event.py", "code.pushed", stdin="[1, 2]", env={"GANTZ_ARG_PAYLOAD": '{"no": 1}'}
    )
    assert outcome.answer["payload"] == [1, 2]


def test_publish_from_a_delivery_carries_the_lineage_the_runner_passes(run: Runner) -> None:
    env = {"EDA_CAUSATION_ID": "cause-1", "EDA_CORRELATION_ID": "chain-1"}
    published = run("publish_event.py", "alert.escalated", "agent", stdin="{}", env=env).answer
    assert (published["causation_id"], published["correlation_id"]) == ("cause-1", "chain-1")
    plain = run("publish_event.py", "alert.escalated", stdin="{}").answer
    assert "causation_id" not in plain
    assert "correlation_id" not in plain


def test_publish_from_a_traced_tool_call_carries_its_trace_context_on(run: Runner) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    env = {"TRACEPARENT": traceparent, "TRACESTATE": "rojo=00f067aa0ba902b7"}
    published = run("publish_event.py", "alert.escalated", stdin="{}", env=env).answer
    assert published["attributes"] == {
        "traceparent": traceparent,
        "tracestate": "rojo=00f067aa0ba902b7",
    }
    garbled = {"TRACEPARENT": "00-not-a-trace-context-01"}
    assert "attributes" not in run("publish_event.py", "a.b", stdin="{}", env=garbled).answer


@pytest.mark.parametrize("source", [None, "", "{{source}}", "  "])
def test_publish_without_a_source_records_unknown(run: Runner, source: str | None) -> None:
    args = ["alert.triggered"] if source is None else ["alert.triggered", source]
    assert run("publish_event.py", *args, stdin="{}").answer["source"] == "unknown"


@pytest.mark.parametrize("payload", ["not json", "{'single': 'quotes'}", "NaN", '{"a": 1'])
def test_publish_refuses_a_payload_that_is_not_json(
    run: Runner, store: EventStore, payload: str
) -> None:
    error = run("publish_event.py", "alert.triggered", stdin=payload).error(2)
    assert (error["error"], error["field"]) == ("invalid_input", "payload")
    assert store.history() == []


@pytest.mark.parametrize("payload", [None, "", "{{payload}}"])
def test_publish_without_a_payload_says_it_is_required(run: Runner, payload: str | None) -> None:
    env = {} if payload is None else {"GANTZ_ARG_PAYLOAD": payload}
    error = run("publish_event.py", "alert.triggered", env=env).error(2)
    assert error["field"] == "payload"
    assert "required" in error["message"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["Not A Type"], "type"),
        (["{{event_type}}"], "event_type"),
        (["a.b", "s", "x"], "arguments"),
    ],
)
def test_publish_refuses_bad_arguments(run: Runner, args: list[str], field: str) -> None:
    error = run("publish_event.py", *args, stdin="{}").error(2)
    assert error["field"] == field


# -- get_events.py -----------------------------------------------------------------------------


def test_get_events_lists_summaries_newest_first(run: Runner, store: EventStore) -> None:
    first = Event.create(type="alert.triggered", source="tests", payload={"n": 1})
    second = Event.create(type="code.pushed", source="tests", payload={"n": 2})
    third = Event.create(type="alert.triggered", source="tests", payload={"n": 3})
    for event in (first, second, third):
        store.publish(event)

    page = run("get_events.py", "{{event_type}}", "{{since}}", "{{limit}}", "{{cursor}}").answer
    assert [e["id"] for e in page["events"]] == [third.id, second.id, first.id]
    assert page["events"][0] == {
        "id": third.id,
        "type": "alert.triggered",
        "source": "tests",
        "time": third.timestamp,
        "status": "pending",
        "handlers": {},
    }
    assert page["next_cursor"] is None

    alerts = run("get_events.py", "alert.triggered", "", "").answer["events"]
    assert [e["id"] for e in alerts] == [third.id, first.id]
    one = run("get_events.py", "", "", "1").answer
    assert [e["id"] for e in one["events"]] == [third.id]
    rest = run("get_events.py", "", "", "5", one["next_cursor"]).answer
    assert [e["id"] for e in rest["events"]] == [second.id, first.id]
    assert run("get_events.py").answer == page


def test_get_events_gives_one_full_record_by_id(run: Runner, store: EventStore) -> None:
    event = Event.create(type="alert.triggered", source="tests", payload={"n": 1})
    store.publish(event)
    full = run("get_events.py", "", "", "", "", event.id).answer
    transcripts = full.pop("transcripts")  # each agent run, turn by turn: none here
    assert full == store.get(event.id).as_dict()
    assert isinstance(transcripts, dict | list)
    assert run("get_events.py", "", "", "", "", "f" * 32).error(3)["field"] == "event_id"


def test_get_events_since_takes_a_duration_or_a_timestamp(run: Runner, store: EventStore) -> None:
    event = Event.create(type="alert.triggered", source="tests")
    store.publish(event)

    def ids(*args: str) -> list[str]:
        return [e["id"] for e in run("get_events.py", *args).answer["events"]]

    assert ids("", "1h") == [event.id]
    assert ids("", "2999-01-01T00:00:00Z") == []
    assert ids("", "2000-01-01") == [event.id]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["", "", "ten"], "limit"),
        (["", "", "0"], "limit"),
        (["", "", "1001"], "limit"),
        (["", "yesterday"], "since"),
        (["Bad Type"], "type"),
        (["", "", "", "not-a-cursor"], "cursor"),
        (["a.b", "1h", "5", "", "", "extra"], "arguments"),
    ],
)
def test_get_events_refuses_bad_arguments(run: Runner, args: list[str], field: str) -> None:
    assert run("get_events.py", *args).error(2)["field"] == field


# -- ack_event.py ------------------------------------------------------------------------------


@pytest.fixture
def stored_id(store: EventStore) -> str:
    event = Event.create(type="alert.triggered", source="tests")
    store.publish(event)
    return event.id


@pytest.mark.parametrize("status", [None, "", "{{status}}"])
def test_ack_defaults_to_processed(
    run: Runner, store: EventStore, stored_id: str, status: str | None
) -> None:
    args = [stored_id] if status is None else [stored_id, status]
    assert run("ack_event.py", *args).answer == {
        "event_id": stored_id,
        "status": "processed",
        "previous_status": "pending",
    }
    assert store.get(stored_id).status == "processed"


def test_ack_sets_the_status_given(run: Runner, store: EventStore, stored_id: str) -> None:
    assert run("ack_event.py", stored_id).answer["status"] == "processed"
    answer = run("ack_event.py", stored_id, "ignored").answer
    assert (answer["status"], answer["previous_status"]) == ("ignored", "processed")
    assert store.get(stored_id).status == "ignored"


def test_ack_of_an_unknown_event_is_not_found(run: Runner) -> None:
    error = run("ack_event.py", "no-such-event").error(3)
    assert (error["error"], error["field"]) == ("not_found", "event_id")


def test_ack_with_an_unknown_status_names_the_accepted_ones(
    run: Runner, store: EventStore, stored_id: str
) -> None:
    error = run("ack_event.py", stored_id, "done").error(2)
    assert error["field"] == "status"
    assert all(status in error["message"] for status in ACK_STATUSES)
    assert store.get(stored_id).status == "pending"


def test_ack_requires_an_event_id(run: Runner) -> None:
    assert run("ack_event.py", "{{event_id}}").error(2)["field"] == "event_id"
    assert run("ack_event.py").error(2)["field"] == "event_id"


# -- the store out of reach --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [("publish_event.py", ["a.b"]), ("get_events.py", []), ("ack_event.py", ["some-id"])],
)
def test_an_unreachable_store_is_exit_4_with_a_json_error(
    run: Runner, name: str, args: list[str]
) -> None:
    unreachable = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    error = run(name, *args, stdin="{}", env=unreachable).error(4)
    assert error["error"] == "store_unavailable"
    assert "unreachable" in error["message"]


# -- gantz.yaml --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gantz() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "gantz.yaml").read_text()))


def tool(gantz: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in gantz["tools"] if t["name"] == name)


def test_gantz_yaml_declares_the_foundation_tools_over_existing_scripts(
    gantz: dict[str, Any],
) -> None:
    assert gantz["name"] == "event-driven-agent"
    assert gantz["description"] and gantz["version"]
    for name in ("publish_event", "get_event_history", "acknowledge_event"):
        declared = tool(gantz, name)
        parameters = {p["name"]: p for p in declared["parameters"]}
        assert declared["description"]
        assert all(
            p["description"] and p["type"] in {"string", "integer"} for p in parameters.values()
        )
        assert all(isinstance(p.get("default", ""), str) for p in parameters.values())
        script = declared["script"]
        assert script["command"] == "python3"
        assert script["args"][0] == "scripts/launch.py"
        assert (ROOT / "scripts" / f"{script['args'][1]}.py").is_file()
        used = TEMPLATE.findall(" ".join(script["args"]) + script.get("stdin", ""))
        assert sorted(used) == sorted(parameters)  # every parameter reaches the script


def test_the_acknowledge_statuses_described_are_those_the_store_accepts(
    gantz: dict[str, Any],
) -> None:
    status = next(
        p for p in tool(gantz, "acknowledge_event")["parameters"] if p["name"] == "status"
    )
    assert set(re.findall(r'"(\w+)"', status["description"])) == set(ACK_STATUSES)
    assert status["default"] in ACK_STATUSES


#: The PATH of a shell without the project's virtualenv.
CLEAN_PATH = "/usr/bin:/bin"


def call_as_gantz(
    gantz: dict[str, Any],
    name: str,
    arguments: dict[str, str],
    env: dict[str, str],
    root: Path = ROOT,
) -> Outcome:
    """Run a tool as the Gantz CLI does: templates of arguments not sent stay, no stdin.

    The command is found on a clean ``PATH``, without the project's virtualenv, as in the
    shell of someone who just installed Gantz.
    """
    script = tool(gantz, name)["script"]
    args = [TEMPLATE.sub(lambda m: arguments.get(m[1], m[0]), arg) for arg in script["args"]]
    exported = {f"GANTZ_ARG_{key.upper()}": value for key, value in arguments.items()}
    command = shutil.which(script["command"], path=CLEAN_PATH)
    assert command is not None, f"{script['command']} is not on {CLEAN_PATH}"
    result = subprocess.run(
        [command, *args],
        cwd=root,
        env={**env, **exported, "PATH": CLEAN_PATH},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return Outcome(result.returncode, result.stdout, result.stderr)


def test_the_tools_work_as_the_gantz_cli_calls_them(
    gantz: dict[str, Any], script_env: dict[str, str], store: EventStore
) -> None:
    published = call_as_gantz(
        gantz, "publish_event", {"event_type": "alert.triggered", "payload": '{"a": 1}'}, script_env
    ).answer
    assert (published["payload"], published["source"]) == ({"a": 1}, "unknown")

    history = call_as_gantz(gantz, "get_event_history", {}, script_env).answer["events"]
    assert [e["id"] for e in history] == [published["id"]]

    acknowledged = call_as_gantz(
        gantz, "acknowledge_event", {"event_id": published["id"]}, script_env
    ).answer
    assert acknowledged["status"] == "processed"
    assert store.get(published["id"]).status == "processed"


def test_the_tools_run_from_a_shell_without_the_virtualenv(
    gantz: dict[str, Any], script_env: dict[str, str], store: EventStore
) -> None:
    # The python3 of a clean PATH has none of the project's packages.
    bare = shutil.which("python3", path=CLEAN_PATH)
    assert bare is not None
    probe = subprocess.run([bare, "-c", "import redis"], capture_output=True, env={})
    assert probe.returncode != 0, "the system python3 has the project's packages"
    for name, sent in [
        ("publish_event", {"event_type": "alert.triggered", "payload": '{"a": 1}'}),
        ("get_event_history", {"limit": "5"}),
        ("get_dead_letters", {}),
    ]:
        outcome = call_as_gantz(gantz, name, sent, script_env)
        assert outcome.code == 0, (name, outcome.stderr)
        assert "ModuleNotFoundError" not in outcome.stderr


def test_without_the_project_environment_a_tool_fails_with_one_clear_line(
    gantz: dict[str, Any], script_env: dict[str, str], tmp_path: Path
) -> None:
    # A checkout whose .venv was never made, called from a shell whose python3 lacks eda.
    (tmp_path / "scripts").mkdir()
    for name in ("launch.py", "publish_event.py"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    outcome = call_as_gantz(
        gantz,
        "publish_event",
        {"event_type": "alert.triggered", "payload": "{}"},
        script_env,
        root=tmp_path,
    )
    error = outcome.error(1)
    assert error["error"] == "environment"
    assert "cannot import 'eda'" in error["message"] and "dev.py up" in error["message"]
    assert len(outcome.stderr.strip().splitlines()) == 1
