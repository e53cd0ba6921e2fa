"""The built-in MCP server, through the SDK's own client: in process, over stdio and over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp
import pytest
import yaml
from mcp import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from eda.core import Core
from eda.errors import InvalidInput
from eda.gantz_yaml import read_gantz_file
from eda.redis_server import free_port
from eda.settings import ROOT
from eda.tools import typed_default
from scripts.mcp_server import build_server, check_exposure, is_loopback, transport_security
from tests.conftest import wait_for

GANTZ = ROOT / "gantz.yaml"
TOKEN = "a-test-token-of-enough-length-1234"
#: Every interface: where serving without a token must be refused.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104
#: A tool of the test's own: echoes its arguments as JSON, or fails when told to.
EXTRA_SCRIPT = """\
import json, sys
if sys.argv[1] == "fail":
    print("it failed as asked", file=sys.stderr)
    sys.exit(5)
print(json.dumps({"word": sys.argv[1], "times": sys.argv[2]}))
"""
EXTRA_TOOL = """\
  - name: shout
    description: Repeat a word.
    parameters:
      - {name: word, type: string, required: true, description: The word.}
      - {name: times, type: integer, default: 2}
    script: {command: python, args: ["shout.py", "{{word}}", "{{times}}"], timeout: 10s}
"""

Session = Callable[[mcp.Client], Awaitable[Any]]


def store_env(core: Core) -> dict[str, str]:
    """The variables that point the tool scripts at this test's store."""
    return {"REDIS_URL": str(core.settings.redis_url), "EDA_PREFIX": core.settings.prefix}


def in_process(core: Core, session: Session, path: Path = GANTZ) -> Any:
    """Run ``session`` against an in-process server for the gantz.yaml at ``path``."""
    server = build_server(read_gantz_file(path), env=store_env(core))

    async def main() -> Any:
        async with mcp.Client(server) as client:
            return await session(client)

    return anyio.run(main)


def with_extra_tool(tmp_path: Path) -> Path:
    """A copy of the repository's gantz.yaml, run from its folder, plus one tool of our own."""
    (tmp_path / "shout.py").write_text(EXTRA_SCRIPT)
    text = GANTZ.read_text().replace("scripts/", f"{ROOT}/scripts/")
    path = tmp_path / "gantz.yaml"
    path.write_text(text.rstrip() + "\n\n" + EXTRA_TOOL)
    return path


def text_of(result: Any) -> str:
    return "".join(block.text for block in result.content)


# -- listing ----------------------------------------------------------------------------------


def test_listed_tools_and_schemas_are_those_of_gantz_yaml(core: Core) -> None:
    async def session(client: mcp.Client) -> Any:
        return (await client.list_tools()).tools

    listed = in_process(core, session)
    declared = yaml.safe_load(GANTZ.read_text())["tools"]
    assert [tool.name for tool in listed] == [entry["name"] for entry in declared]
    for tool, entry in zip(listed, declared, strict=True):
        assert " ".join(tool.description.split()) == " ".join(entry["description"].split())
        schema = tool.input_schema
        parameters = entry.get("parameters") or []
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        assert list(schema["properties"]) == [p["name"] for p in parameters]
        assert schema.get("required", []) == [p["name"] for p in parameters if p.get("required")]
        for p in parameters:
            prop = schema["properties"][p["name"]]
            if p["name"] == "payload":  # JSON text, or the JSON value itself
                assert prop["type"] == [p["type"], "object", "array"]
            else:
                assert prop["type"] == p["type"]
            assert " ".join(prop["description"].split()) == " ".join(p["description"].split())
            if "default" in p:  # text in gantz.yaml, a value of the parameter's type here
                assert prop["default"] == typed_default(p["type"], str(p["default"]))


# -- calling the tools of gantz.yaml against the real store -----------------------------------


def test_publish_then_history_then_acknowledge(core: Core) -> None:
    async def session(client: mcp.Client) -> Any:
        published = await client.call_tool(
            "publish_event",
            {"event_type": "alert.triggered", "payload": '{"severity": "high"}', "source": "mcp"},
        )
        assert not published.is_error, text_of(published)
        event_id = published.structured_content["id"]
        history = await client.call_tool(
            "get_event_history", {"event_type": "alert.triggered", "since": "1h", "limit": 5}
        )
        acked = await client.call_tool("acknowledge_event", {"event_id": event_id})
        return event_id, history, acked

    event_id, history, acked = in_process(core, session)
    stored = core.get_event(event_id)
    assert (stored.event.payload, stored.event.source) == ({"severity": "high"}, "mcp")
    assert not history.is_error
    (listed,) = json.loads(text_of(history))["events"]
    assert listed["id"] == event_id
    assert not acked.is_error
    assert acked.structured_content == {
        "event_id": event_id,
        "status": "processed",
        "previous_status": listed["status"],
    }
    assert core.get_event(event_id).status == "processed"


def test_omitted_optional_arguments_are_left_to_the_script(core: Core) -> None:
    async def session(client: mcp.Client) -> Any:
        return await client.call_tool(
            "publish_event", {"event_type": "alert.triggered", "payload": "{}"}
        )

    result = in_process(core, session)
    assert not result.is_error, text_of(result)
    assert result.structured_content["source"] == "unknown"


def test_a_failing_script_comes_back_as_an_error_result_with_stderr(core: Core) -> None:
    async def session(client: mcp.Client) -> Any:
        bad_time = await client.call_tool("get_event_history", {"since": "last tuesday"})
        unknown = await client.call_tool("acknowledge_event", {"event_id": "no-such-event"})
        return bad_time, unknown

    bad_time, unknown = in_process(core, session)
    assert bad_time.is_error
    assert json.loads(text_of(bad_time))["field"] == "since"
    assert unknown.is_error
    assert json.loads(text_of(unknown))["error"] == "not_found"


def test_subscribing_a_name_that_is_no_handler_is_an_error_result_and_stores_nothing(
    core: Core,
) -> None:
    async def session(client: mcp.Client) -> Any:
        return await client.call_tool(
            "subscribe_events",
            {"event_types": "alert.*", "handler_id": "eda.core:logging.setLogRecordFactory"},
        )

    result = in_process(core, session)
    assert result.is_error
    refusal = json.loads(text_of(result))
    assert refusal["field"] == "handler_id"
    assert "eda.core:logging.setLogRecordFactory" in refusal["message"]
    assert core.subscriptions() == []


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"event_type": "alert.triggered"}, "payload"),
        ({"event_type": "alert.triggered", "payload": 7}, "payload"),
        ({"event_type": "alert.triggered", "payload": "{}", "colour": "red"}, "colour"),
    ],
)
def test_arguments_are_checked_against_the_schema_before_anything_runs(
    core: Core, arguments: dict[str, Any], named: str
) -> None:
    async def session(client: mcp.Client) -> Any:
        return await client.call_tool("publish_event", arguments)

    result = in_process(core, session)
    assert result.is_error
    assert f"invalid argument {named!r}" in text_of(result)
    assert core.history() == []


def test_an_unknown_tool_is_a_protocol_error(core: Core) -> None:
    async def session(client: mcp.Client) -> Any:
        try:
            await client.call_tool("no_such_tool", {})
        except MCPError as exc:
            return exc
        return None

    error = in_process(core, session)
    assert isinstance(error, MCPError)
    assert "unknown tool 'no_such_tool'" in str(error)


def test_an_extra_tool_in_gantz_yaml_is_served_without_code_changes(
    core: Core, tmp_path: Path
) -> None:
    path = with_extra_tool(tmp_path)

    async def session(client: mcp.Client) -> Any:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        ok = await client.call_tool("shout", {"word": "hey", "times": 3})
        omitted = await client.call_tool("shout", {"word": "hey"})
        failed = await client.call_tool("shout", {"word": "fail"})
        return listed, ok, omitted, failed

    listed, ok, omitted, failed = in_process(core, session, path)
    assert listed["shout"].input_schema["properties"]["times"] == {
        "type": "integer",
        "description": "",
        "default": 2,
    }
    assert "publish_event" in listed
    assert ok.structured_content == {"word": "hey", "times": "3"}
    assert json.loads(text_of(ok)) == {"word": "hey", "times": "3"}
    assert omitted.structured_content == {"word": "hey", "times": "{{times}}"}  # as Gantz does
    assert failed.is_error
    assert "it failed as asked" in text_of(failed)


def test_every_tool_of_gantz_yaml_works_against_a_real_store_and_worker(
    live: Core, unique_type: Callable[[str], str]
) -> None:
    from tests.workers import FAST

    event_type = unique_type("mcp")
    env = {**store_env(live), **FAST, "PYTHONPATH": str(ROOT)}  # tests.handlers, as the worker
    server = build_server(read_gantz_file(GANTZ), env=env)
    called: set[str] = set()

    async def call(client: mcp.Client, name: str, **arguments: Any) -> Any:
        called.add(name)
        result = await client.call_tool(name, arguments)
        assert not result.is_error, f"{name}: {text_of(result)}"
        return json.loads(text_of(result))

    async def session(client: mcp.Client) -> str:
        await call(
            client, "subscribe_events", event_types=event_type, handler_id="tests.handlers:flaky"
        )
        payload = json.dumps({"fail_times": 1, "mode": "permanent"})
        published = await call(client, "publish_event", event_type=event_type, payload=payload)
        event_id = published["id"]
        await settle(lambda: live.dead_letter_list(5, event_type))
        letters = await call(client, "get_dead_letters", event_type=event_type, limit=5)
        assert [letter["event_id"] for letter in letters["dead_letters"]] == [event_id]
        assert letters["more"] == 0
        await call(client, "retry_event", event_id=event_id)
        await settle(lambda: status(live, event_id) == "succeeded")
        planned = await call(client, "replay_events", event_type=event_type, dry_run=True)
        assert [item["event_id"] for item in planned["items"]] == [event_id]
        await call(client, "replay_events", event_type=event_type, handler="tests.handlers:succeed")
        await settle(lambda: replayed(live, event_id))
        (listed,) = (await call(client, "get_event_history", event_type=event_type))["events"]
        assert listed["id"] == event_id
        full = await call(client, "get_event_history", event_id=event_id)
        assert full["deliveries"] and full["payload"] == json.loads(payload)
        await call(client, "acknowledge_event", event_id=event_id, status="ignored")
        return str(event_id)

    async def main() -> str:
        async with mcp.Client(server) as client:
            return await session(client)

    event_id = anyio.run(main)
    assert live.get_event(event_id).status == "ignored"
    # The GitHub tools are tested against a GitHub stand-in (tests/test_github.py).
    assert called == {n for n, t in read_gantz_file(GANTZ).tools.items() if t.http is None}


async def settle(predicate: Callable[[], Any]) -> None:
    """Wait (off the event loop) until the worker has made ``predicate`` true."""
    await anyio.to_thread.run_sync(lambda: wait_for(predicate))


def status(core: Core, event_id: str) -> str:
    return core.get_event(event_id).status


def replayed(core: Core, event_id: str) -> bool:
    delivery = core.get_event(event_id).deliveries.get("tests.handlers:succeed", {})
    return delivery.get("status") == "succeeded"


# -- over stdio, as Claude Desktop and Claude Code run it -------------------------------------


def test_a_real_stdio_subprocess_lists_and_calls_tools(core: Core, tmp_path: Path) -> None:
    path = with_extra_tool(tmp_path)
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["-m", "scripts.mcp_server", "--gantz", str(path)],
        env=store_env(core),
        cwd=str(tmp_path),
    )

    async def main() -> Any:
        async with mcp.Client(parameters) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            published = await client.call_tool(
                "publish_event", {"event_type": "code.pr_opened", "payload": '{"pr": 7}'}
            )
            shout = await client.call_tool("shout", {"word": "stdio", "times": 1})
            return names, published, shout

    names, published, shout = anyio.run(main)
    assert names == [*read_gantz_file(GANTZ).tools, "shout"]
    assert not published.is_error, text_of(published)
    assert core.get_event(published.structured_content["id"]).event.payload == {"pr": 7}
    assert shout.structured_content == {"word": "stdio", "times": "1"}


def test_a_malformed_gantz_yaml_stops_the_server_at_start(tmp_path: Path) -> None:
    path = tmp_path / "gantz.yaml"
    path.write_text(
        "tools:\n  - name: t\n    description: d\n    script: {command: x}\n"
        "    parameters: [{name: when, type: date}]\n"
    )
    started = subprocess.run(
        [sys.executable, "-m", "scripts.mcp_server", "--gantz", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert started.returncode == 2
    assert started.stderr.strip() == (
        f"error: {path}:5: tools[0] (t).parameters[0] (when).type: "
        "'date' is not one of string, integer, number, boolean"
    )


# -- over Streamable HTTP, behind the bearer token --------------------------------------------


@contextmanager
def running_http(core: Core, host: str = "127.0.0.1", token: str | None = TOKEN) -> Iterator[int]:
    """The server as a subprocess on a free port of ``host``; yields the port."""
    port = free_port()
    env = {**os.environ, **store_env(core)}
    env.pop("EDA_MCP_TOKEN", None)
    if token is not None:
        env["EDA_MCP_TOKEN"] = token
    command = ["-m", "scripts.mcp_server", "--transport", "http", "--host", host]
    process = subprocess.Popen(
        [sys.executable, *command, "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(host, port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


@pytest.fixture
def http_server(core: Core) -> Iterator[str]:
    """The server as a subprocess on a free loopback port, with a token; yields its URL."""
    with running_http(core) as port:
        yield f"http://127.0.0.1:{port}/mcp"


def _wait_for_port(host: str, port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the MCP server exited at start"
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the MCP server did not start listening")


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-of-enough-length"}, {"Authorization": TOKEN}],
)
def test_http_refuses_a_missing_or_wrong_token(http_server: str, headers: dict[str, str]) -> None:
    response = httpx2.post(
        http_server,
        json=INITIALIZE,
        headers={"Accept": "application/json, text/event-stream", **headers},
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in response.text


def test_http_serves_the_tools_with_the_right_token(http_server: str, core: Core) -> None:
    async def main() -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            transport = streamable_http_client(http_server, http_client=http)
            async with mcp.Client(transport) as client:
                names = [tool.name for tool in (await client.list_tools()).tools]
                published = await client.call_tool(
                    "publish_event", {"event_type": "alert.triggered", "payload": "{}"}
                )
                return names, published

    names, published = anyio.run(main)
    assert names == list(read_gantz_file(GANTZ).tools)
    assert not published.is_error, text_of(published)
    assert core.get_event(published.structured_content["id"]).event.type == "alert.triggered"


@pytest.mark.parametrize(
    ("host", "token", "refused"),
    [
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
        (ALL_INTERFACES, None, True),
        ("192.168.1.10", None, True),
        (ALL_INTERFACES, TOKEN, False),
        ("127.0.0.2", None, True),
        ("0:0:0:0:0:0:0:1", None, True),
        ("[::1]", None, True),
        ("127.0.0.2", TOKEN, False),
    ],
)
def test_no_token_means_loopback_only(host: str, token: str | None, refused: bool) -> None:
    if refused:
        with pytest.raises(InvalidInput):
            check_exposure(host, token)
    else:
        check_exposure(host, token)
    assert is_loopback(host) == (host in ("127.0.0.1", "localhost", "::1"))


def _initialize(port: int, host_header: str, origin: str | None, token: str | None) -> int:
    headers = {"Accept": "application/json, text/event-stream", "Host": host_header}
    if origin is not None:
        headers["Origin"] = origin
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    url = f"http://127.0.0.1:{port}/mcp"
    return httpx2.post(url, json=INITIALIZE, headers=headers, timeout=30).status_code


@pytest.mark.parametrize("token", [None, TOKEN])
def test_http_answers_only_requests_that_name_this_server(core: Core, token: str | None) -> None:
    # A web page reaching the server by DNS rebinding sends its own name as Host and Origin.
    with running_http(core, "127.0.0.1", token) as port:
        assert _initialize(port, "evil.example", "http://evil.example", token) == 421
        assert _initialize(port, f"evil.example:{port}", None, token) == 421
        own = f"127.0.0.1:{port}"
        assert _initialize(port, own, "http://evil.example", token) == 403
        assert _initialize(port, own, None, token) == 200
        assert _initialize(port, f"localhost:{port}", f"http://localhost:{port}", token) == 200


def test_http_on_another_loopback_address_checks_hosts_too(core: Core) -> None:
    # Once answered initialize for Host evil.example (the SDK guards only exact loopback names).
    with running_http(core, "127.0.0.2", TOKEN) as port:
        status = httpx2.post(
            f"http://127.0.0.2:{port}/mcp",
            json=INITIALIZE,
            headers={
                "Accept": "application/json, text/event-stream",
                "Host": "evil.example",
                "Origin": "http://evil.example",
                "Authorization": f"Bearer {TOKEN}",
            },
            timeout=30,
        ).status_code
        assert status == 421


def test_allowed_host_names_are_accepted_besides_the_address() -> None:
    settings = transport_security("0.0.0.0", 8765, ("mcp.example.com",))  # noqa: S104
    assert settings.enable_dns_rebinding_protection
    assert settings.allowed_hosts == ["mcp.example.com:8765"]
    assert "https://mcp.example.com:8765" in settings.allowed_origins
    assert transport_security("::1", 9).allowed_hosts == ["127.0.0.1:9", "localhost:9", "[::1]:9"]


def test_no_token_on_a_public_address_refuses_to_start(core: Core) -> None:
    env = {**os.environ, **store_env(core)}
    env.pop("EDA_MCP_TOKEN", None)
    command = ["-m", "scripts.mcp_server", "--transport", "http", "--host", ALL_INTERFACES]
    started = subprocess.run(
        [sys.executable, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert started.returncode == 2
    assert len(started.stderr.strip().splitlines()) == 1
    assert "without a token" in started.stderr


# -- answers that fit a client's context --------------------------------------------------------


def test_publish_takes_the_payload_as_an_object_as_well_as_as_text(core: Core) -> None:
    async def session(client: mcp.Client) -> Any:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        schema = tools["publish_event"].input_schema["properties"]["payload"]
        as_object = await client.call_tool(
            "publish_event", {"event_type": "alert.triggered", "payload": {"severity": "high"}}
        )
        as_list = await client.call_tool(
            "publish_event", {"event_type": "alert.triggered", "payload": [1, 2]}
        )
        return schema, as_object, as_list

    schema, as_object, as_list = in_process(core, session)
    assert "object" in schema["type"] and "string" in schema["type"]
    for result, payload in ((as_object, {"severity": "high"}), (as_list, [1, 2])):
        assert not result.is_error, text_of(result)
        assert core.get_event(result.structured_content["id"]).event.payload == payload


AGENT_OUTCOME = {
    "agent": "CustomerAgent",
    "backend": "anthropic",
    "text": "Drafted a message to the customer. " * 120,
    "tool_calls": [{"name": "get_event_history", "input": {}, "result": "x" * 6000}],
    "usage": {"input_tokens": 4000, "output_tokens": 300},
}


def test_default_history_over_stdio_of_a_hundred_agent_handled_events_fits_a_context(
    core: Core, tmp_path: Path
) -> None:
    from eda.delivery import Status
    from tests.lifecycle import finish, queue, start

    assert len(json.dumps(AGENT_OUTCOME)) > 10_000
    for n in range(100):
        event_id = core.publish("customer.signup", {"customer": f"c{n}"}, "stripe").event_id
        queue(core.deliveries, event_id, "CustomerAgent")
        start(core.deliveries, event_id, "CustomerAgent")
        finish(core.deliveries, event_id, "CustomerAgent", Status.SUCCEEDED, outcome=AGENT_OUTCOME)
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["-m", "scripts.mcp_server"],
        env=store_env(core),
        cwd=str(ROOT),
    )

    async def main() -> Any:
        async with mcp.Client(parameters) as client:
            first = await client.call_tool("get_event_history", {})
            page = json.loads(text_of(first))
            more = await client.call_tool("get_event_history", {"cursor": page["next_cursor"]})
            full = await client.call_tool(
                "get_event_history", {"event_id": page["events"][0]["id"]}
            )
            return first, more, full

    first, more, full = anyio.run(main)
    assert len(text_of(first)) < 8000
    page, next_page = json.loads(text_of(first)), json.loads(text_of(more))
    assert len(page["events"]) == 20 and page["next_cursor"]  # the default page, as documented
    assert page["events"][0]["handlers"] == {"CustomerAgent": "succeeded"}
    assert not {e["id"] for e in page["events"]} & {e["id"] for e in next_page["events"]}
    assert json.loads(text_of(full))["deliveries"][0]["runs"]
