"""eda.tools and eda.gantz_yaml: reading gantz.yaml strictly and running a tool as Gantz does."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from eda.errors import InvalidInput
from eda.settings import ROOT
from eda.tools import (
    JSON_TEXT_PARAMETERS,
    Parameter,
    Tool,
    load_tools,
    own_arguments,
    own_script,
    prepare,
    run_tool,
    substitute,
    validate_arguments,
)

#: A script that reports what it was given, as JSON.
ECHO_SCRIPT = """\
import json, os, sys
print(json.dumps({
    "argv": sys.argv[1:],
    "stdin": sys.stdin.read(),
    "gantz": {k: v for k, v in os.environ.items() if k.startswith("GANTZ_ARG_")},
    "env": {k: os.environ.get(k) for k in ("TOOL_LEVEL", "CALL_LEVEL")},
    "cwd": os.getcwd(),
    "executable": sys.executable,
}))
"""

ECHO_TOOL = """\
tools:
  - name: echo
    description: Report the arguments.
    parameters:
      - {name: text, type: string, required: true, description: Some text.}
      - {name: since, type: string}
      - {name: limit, type: integer, default: 100}
      - {name: ratio, type: number}
      - {name: loud, type: boolean, default: false}
    environment: {TOOL_LEVEL: from-tool, CALL_LEVEL: from-tool}
    script:
      command: python
      args: ["echo.py", "{{text}}", "{{since}}", "--limit={{limit}}"]
      stdin: "payload: {{text}}"
"""


def write_file(folder: Path, text: str, name: str = "gantz.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def echo_tool(tmp_path: Path) -> Tool:
    write_file(tmp_path, ECHO_SCRIPT, "echo.py")
    return load_tools(write_file(tmp_path, ECHO_TOOL))["echo"]


def run_echo(tool: Tool, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    result = run_tool(tool, arguments, **kwargs)
    assert result.ok, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def script_tool(tmp_path: Path, body: str, timeout: str = "10s", params: str = "[]") -> Tool:
    write_file(tmp_path, body, "script.py")
    text = f"""\
        tools:
          - name: scripted
            description: Runs script.py.
            parameters: {params}
            script: {{command: python, args: ["script.py", "{{{{arg}}}}"], timeout: {timeout}}}
        """
    return load_tools(write_file(tmp_path, text))["scripted"]


# -- loading ----------------------------------------------------------------------------------


def test_the_repository_gantz_yaml_loads_and_its_schemas_match_the_file() -> None:
    path = ROOT / "gantz.yaml"
    declared = yaml.safe_load(path.read_text())["tools"]
    tools = load_tools(path)
    assert list(tools) == [entry["name"] for entry in declared]
    for entry in declared:
        schema = tools[entry["name"]].input_schema()
        parameters = entry.get("parameters") or []
        assert list(schema["properties"]) == [p["name"] for p in parameters]
        assert schema["required"] == [p["name"] for p in parameters if p.get("required")]
        for p in parameters:
            # payload (JSON as text) takes the JSON value itself too, as MCP clients send it
            widened = ["string", "object", "array"] if p["name"] in JSON_TEXT_PARAMETERS else None
            assert schema["properties"][p["name"]]["type"] in (p["type"], widened)
        if "script" in entry:
            assert tools[entry["name"]].command == entry["script"]["command"]
        else:  # the GitHub tools: requests to EDA_GITHUB_API_URL, by default GitHub's
            assert tools[entry["name"]].http.url.startswith("https://api.github.com/repos/")


def test_the_project_tools_run_through_the_launcher_are_its_own_scripts() -> None:
    tools = load_tools(ROOT / "gantz.yaml")
    publish = tools["publish_event"]
    assert publish.args[0] == "scripts/launch.py"
    assert own_script(publish) == "scripts.publish_event"
    argv = ["python3", "scripts/launch.py", "publish_event", "a.b", "src"]
    assert own_arguments(publish, argv) == ["a.b", "src"]


def test_a_json_text_parameter_takes_a_json_value_as_its_text() -> None:
    publish = load_tools(ROOT / "gantz.yaml")["publish_event"]
    texts = validate_arguments(publish, {"event_type": "a.b", "payload": {"k": ["é", 1]}})
    assert json.loads(texts["payload"]) == {"k": ["é", 1]}
    with pytest.raises(InvalidInput) as refused:
        validate_arguments(publish, {"event_type": 7})
    assert refused.value.field == "event_type"


def test_schema_carries_types_descriptions_required_and_typed_defaults(tmp_path: Path) -> None:
    tool = echo_tool(tmp_path)
    assert tool.input_schema() == {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "Some text."},
            "since": {"type": "string", "description": ""},
            "limit": {"type": "integer", "description": "", "default": 100},
            "ratio": {"type": "number", "description": ""},
            "loud": {"type": "boolean", "description": "", "default": False},
        },
        "required": ["text"],
        "additionalProperties": False,
    }
    assert tool.parameters[2] == Parameter("limit", "integer", "", False, "100")


def test_loading_keeps_the_script_as_declared(tmp_path: Path) -> None:
    tool = echo_tool(tmp_path)
    assert tool.command == "python"
    assert tool.args == ("echo.py", "{{text}}", "{{since}}", "--limit={{limit}}")
    assert tool.stdin == "payload: {{text}}"
    assert tool.working_dir == tmp_path.resolve()
    assert tool.timeout == 30.0
    assert tool.environment == {"TOOL_LEVEL": "from-tool", "CALL_LEVEL": "from-tool"}


@pytest.mark.parametrize(
    ("timeout", "seconds"), [("2s", 2.0), ("1m30s", 90.0), ("250ms", 0.25), ("7", 7.0)]
)
def test_timeouts_are_go_durations_or_seconds(tmp_path: Path, timeout: str, seconds: float) -> None:
    assert script_tool(tmp_path, "", timeout=timeout).timeout == seconds


def test_the_default_time_limit_can_be_set_by_the_caller(tmp_path: Path) -> None:
    path = write_file(tmp_path, "tools: [{name: t, description: d, script: {command: x}}]")
    assert load_tools(path, default_timeout=4.5)["t"].timeout == 4.5


def test_variables_are_expanded_across_the_file_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDA_TEST_COMMAND", "my-command")
    monkeypatch.setenv("EDA_TEST_TOKEN", "s3cret")
    monkeypatch.delenv("EDA_TEST_UNSET", raising=False)
    path = write_file(
        tmp_path,
        """\
        tools:
          - name: t
            description: uses ${EDA_TEST_UNSET}variables
            environment: {TOKEN: "$EDA_TEST_TOKEN"}
            script: {command: "${EDA_TEST_COMMAND}"}
        """,
    )
    tool = load_tools(path)["t"]
    assert tool.command == "my-command"
    assert tool.environment == {"TOKEN": "s3cret"}
    assert tool.description == "uses variables"


BROKEN = [
    ("tols: []", "tols", "not a known key"),
    ("name: x", "tools", "is required"),
    ("tools: [{description: d, script: {command: x}}]", "tools[0].name", "is required"),
    (
        "tools: [{name: 'a b', description: d, script: {command: x}}]",
        "tools[0] (a b).name",
        "letters",
    ),
    ("tools: [{name: t, script: {command: x}}]", "tools[0] (t).description", "is required"),
    ("tools: [{name: t, description: d}]", "tools[0] (t).script", "is required"),
    (
        "tools: [{name: t, description: d, script: {command: x}, scripts: 1}]",
        "tools[0] (t).scripts",
        "not a known key",
    ),
    (
        "tools: [{name: t, description: d, script: {args: [a]}}]",
        "tools[0] (t).script.command",
        "is required",
    ),
    (
        "tools: [{name: t, description: d, script: {command: x, args: [1]}}]",
        "tools[0] (t).script.args[0]",
        "must be a string (quote numbers)",
    ),
    (
        "tools: [{name: t, description: d, script: {command: x, args: a}}]",
        "tools[0] (t).script.args",
        "list of strings",
    ),
    (
        "tools: [{name: t, description: d, script: {command: x, timeout: soon}}]",
        "tools[0] (t).script.timeout",
        "duration",
    ),
    (
        "tools: [{name: t, description: d, script: {command: x, timeout: 0}}]",
        "tools[0] (t).script.timeout",
        "duration",
    ),
    (
        "tools: [{name: t, description: d, script: {shell: 'echo {{a}}'}}]",
        "tools[0] (t).script.shell",
        "not supported",
    ),
    (
        "tools: [{name: t, description: d, script: {command: x}, http: {url: 'http://h'}}]",
        "tools[0] (t).http",
        "not both",
    ),
    ("tools: [{name: t, description: d, http: {url: 'ftp://h'}}]", "tools[0] (t).http.url", "http"),
    (
        "tools: [{name: t, description: d, http: {url: 'http://h', method: BREW}}]",
        "tools[0] (t).http.method",
        "not one of",
    ),
    (
        "tools: [{name: t, description: d, parameters: [{name: p, type: array}], "
        "script: {command: x}}]",
        "tools[0] (t).parameters[0] (p).type",
        "not one of",
    ),
    (
        "tools: [{name: t, description: d, parameters: [{name: p}], script: {command: x}}]",
        "tools[0] (t).parameters[0] (p).type",
        "is required",
    ),
    (
        "tools: [{name: t, description: d, parameters: [{type: string}], script: {command: x}}]",
        "tools[0] (t).parameters[0].name",
        "is required",
    ),
    (
        "tools: [{name: t, description: d, parameters: [{name: p, type: string, requird: true}], "
        "script: {command: x}}]",
        "tools[0] (t).parameters[0] (p).requird",
        "not a known key",
    ),
    (
        "tools: [{name: t, description: d, parameters: [{name: p, type: string, required: 'yes'}],"
        " script: {command: x}}]",
        "tools[0] (t).parameters[0] (p).required",
        "true or false",
    ),
    (
        "tools: [{name: t, description: d, parameters: [{name: p, type: integer, default: many}], "
        "script: {command: x}}]",
        "tools[0] (t).parameters[0] (p).default",
        "not a valid integer",
    ),
    (
        "tools: [{name: t, description: d, parameters: [{name: p, type: string}, "
        "{name: p, type: string}], script: {command: x}}]",
        "tools[0] (t).parameters[1] (p).name",
        "used twice",
    ),
    (
        "tools: [{name: t, description: d, script: {command: x}}, "
        "{name: t, description: e, script: {command: y}}]",
        "tools[1] (t).name",
        "used twice",
    ),
    (
        "tools: [{name: t, description: d, environment: [A], script: {command: x}}]",
        "tools[0] (t).environment",
        "mapping",
    ),
    ("tools: []\ntools: []", "", "given twice"),
    ("tools: [unclosed", "", "not valid YAML"),
    ("- just a list", "", "mapping"),
]


@pytest.mark.parametrize(("text", "field", "reason"), BROKEN)
def test_a_malformed_file_is_refused_naming_the_tool_and_field(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = write_file(tmp_path, text)
    with pytest.raises(InvalidInput) as caught:
        load_tools(path)
    at = rf"{re.escape(str(path))}:\d+"
    assert re.fullmatch(f"{at}: {re.escape(field)}" if field else at, caught.value.field)
    assert reason in caught.value.reason


def test_a_mistake_names_the_line_the_tool_the_parameter_and_the_key(tmp_path: Path) -> None:
    path = write_file(
        tmp_path,
        """\
        tools:
          - name: fine
            description: d
            script: {command: x}
          - name: counted
            description: d
            parameters:
              - name: limit
                type: int
            script: {command: x}
        """,
    )
    with pytest.raises(InvalidInput) as caught:
        load_tools(path)
    assert str(caught.value) == (
        f"{path}:9: tools[1] (counted).parameters[0] (limit).type: "
        "'int' is not one of string, integer, number, boolean"
    )


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_tools(tmp_path / "nowhere.yaml")
    assert caught.value.field == str(tmp_path / "nowhere.yaml")
    assert "cannot be read" in caught.value.reason


def test_http_tools_load_with_their_request(tmp_path: Path) -> None:
    path = write_file(
        tmp_path,
        """\
        tools:
          - name: fetch
            description: Fetch a page.
            parameters: [{name: id, type: string, required: true}]
            http: {url: "https://example.invalid/{{id}}", method: post, timeout: 5s,
                   headers: {Accept: application/json}, body: '{"id": "{{id}}"}'}
        """,
    )
    tool = load_tools(path)["fetch"]
    assert tool.http is not None
    assert (tool.http.method, tool.http.timeout, tool.timeout) == ("POST", 5.0, 5.0)
    assert tool.http.headers == {"Accept": "application/json"}
    assert tool.http.body == '{"id": "{{id}}"}'
    assert tool.input_schema()["required"] == ["id"]


# -- arguments --------------------------------------------------------------------------------


def test_arguments_become_the_texts_gantz_substitutes(tmp_path: Path) -> None:
    tool = echo_tool(tmp_path)
    texts = validate_arguments(tool, {"loud": True, "text": "hi", "limit": 5, "ratio": 2.5})
    assert texts == {"text": "hi", "limit": "5", "ratio": "2.5", "loud": "true"}
    assert validate_arguments(tool, {"text": "x", "limit": 5.0, "ratio": 3.0}) == {
        "text": "x",
        "limit": "5",
        "ratio": "3",
    }


@pytest.mark.parametrize(
    ("arguments", "field", "reason"),
    [
        ({}, "text", "is required"),
        ({"text": "x", "colour": "red"}, "colour", "not a parameter of echo"),
        ({"text": 5}, "text", "must be a string, not an integer"),
        ({"text": None}, "text", "must be a string, not null"),
        ({"text": "x", "limit": "5"}, "limit", "must be an integer, not a string"),
        ({"text": "x", "limit": True}, "limit", "must be an integer, not a boolean"),
        ({"text": "x", "limit": 1.5}, "limit", "must be an integer, not a fractional number"),
        ({"text": "x", "ratio": float("nan")}, "ratio", "must be a number"),
        ({"text": "x", "loud": "yes"}, "loud", "must be a boolean"),
        ({"text": "a\x00b"}, "text", "NUL"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(
    tmp_path: Path, arguments: dict[str, Any], field: str, reason: str
) -> None:
    tool = echo_tool(tmp_path)
    with pytest.raises(InvalidInput) as caught:
        validate_arguments(tool, arguments)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_arguments_must_be_an_object(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_arguments(echo_tool(tmp_path), ["text"])
    assert caught.value.field == "arguments"


def test_substitution_is_one_pass_of_plain_text() -> None:
    texts = {"a": "{{b}}", "b": "B"}
    assert substitute("{{a}}-{{b}}-{{c}}-{{ a }}", texts) == "{{b}}-B-{{c}}-{{ a }}"


# -- running ----------------------------------------------------------------------------------


def test_a_run_substitutes_args_and_stdin_and_leaves_omitted_ones_literal(tmp_path: Path) -> None:
    report = run_echo(echo_tool(tmp_path), {"text": "hello world"})
    # since was not sent: its template stays; limit has a default, which is NOT filled in
    assert report["argv"] == ["hello world", "{{since}}", "--limit={{limit}}"]
    assert report["stdin"] == "payload: hello world"


def test_every_argument_sent_is_exported_as_gantz_arg(tmp_path: Path) -> None:
    report = run_echo(echo_tool(tmp_path), {"text": "t", "since": "15m", "loud": False})
    assert report["gantz"] == {
        "GANTZ_ARG_TEXT": "t",
        "GANTZ_ARG_SINCE": "15m",
        "GANTZ_ARG_LOUD": "false",
    }
    assert report["argv"] == ["t", "15m", "--limit={{limit}}"]


def test_python_runs_as_the_current_interpreter_in_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = echo_tool(tmp_path)
    monkeypatch.chdir("/")  # the tool's folder is the file's, not the caller's
    report = run_echo(tool, {"text": "t"})
    assert report["executable"] == sys.executable
    assert report["cwd"] == str(tmp_path.resolve())


def test_call_environment_overrides_the_tools_own(tmp_path: Path) -> None:
    report = run_echo(echo_tool(tmp_path), {"text": "t"}, env={"CALL_LEVEL": "from-call"})
    assert report["env"] == {"TOOL_LEVEL": "from-tool", "CALL_LEVEL": "from-call"}


@pytest.mark.parametrize("text", ["; rm -rf {tmp}/victim", "$(touch {tmp}/victim)", "`id` | cat"])
def test_no_shell_reads_the_arguments(tmp_path: Path, text: str) -> None:
    victim = tmp_path / "victim"
    if "rm" in text:
        victim.mkdir()
    argument = text.format(tmp=tmp_path)
    report = run_echo(echo_tool(tmp_path), {"text": argument, "since": "$HOME"})
    assert report["argv"][:2] == [argument, "$HOME"]
    assert report["stdin"] == f"payload: {argument}"
    assert victim.exists() == ("rm" in text)


def test_a_non_zero_exit_is_a_failed_result_with_stderr(tmp_path: Path) -> None:
    body = "import sys\nprint('partial')\nprint('bad thing', file=sys.stderr)\nsys.exit(3)\n"
    result = run_tool(script_tool(tmp_path, body), {})
    assert (result.ok, result.exit_code, result.timed_out) == (False, 3, False)
    assert result.stdout == "partial\n"
    assert "bad thing" in result.stderr


def test_a_successful_run_is_ok_with_its_stdout(tmp_path: Path) -> None:
    result = run_tool(script_tool(tmp_path, "print('{\"done\": true}')"), {})
    assert (result.ok, result.exit_code, result.stdout) == (True, 0, '{"done": true}\n')
    assert result.duration > 0


def test_the_time_limit_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    body = f"""\
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("started", flush=True)
        time.sleep(60)
        """
    started = time.monotonic()
    result = run_tool(script_tool(tmp_path, body, timeout="500ms"), {})
    assert time.monotonic() - started < 10
    assert (result.ok, result.timed_out, result.exit_code) == (False, True, None)
    assert result.stdout == "started\n"
    assert "timed out after 0.5 s" in result.stderr
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


def test_a_command_that_cannot_start_is_a_failed_result(tmp_path: Path) -> None:
    path = write_file(tmp_path, "tools: [{name: t, description: d, script: {command: no-such-x}}]")
    result = run_tool(load_tools(path)["t"], {})
    assert (result.ok, result.exit_code, result.timed_out) == (False, None, False)
    assert "cannot start 'no-such-x'" in result.stderr


def test_run_refuses_bad_arguments_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    body = f"open({str(marker)!r}, 'w')"
    tool = script_tool(tmp_path, body, params="[{name: arg, type: integer}]")
    with pytest.raises(InvalidInput) as caught:
        run_tool(tool, {"arg": "ten"})
    assert caught.value.field == "arg"
    assert not marker.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by its init) counts as dead
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


# -- a clean environment and bounded output ---------------------------------------------------

#: A script that prints its whole environment.
ENV_SCRIPT = "import json, os\nprint(json.dumps(dict(os.environ)))\n"


def test_no_secret_reaches_a_tool_scripts_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-never-a-tool-7d1e",
        "ANTHROPIC_AUTH_TOKEN": "auth-token-never-3c9a",
        "EDA_ADMIN_TOKEN": "admin-token-never-0123456789",
        "EDA_MCP_TOKEN": "mcp-token-never-0123456789ab",
        "GITHUB_WEBHOOK_SECRET": "gh-secret-never-5b2f",
        "EDA_WEBHOOK_SECRET_ACME": "whsec_bmV2ZXIgYSB0b29s",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-never-8e4d",
        "DATABASE_URL": "postgres://user:pw-never@db/app",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EDA_PREFIX", "tool-prefix")
    tool = script_tool(tmp_path, ENV_SCRIPT)

    result = run_tool(tool, {}, env={"EDA_IDEMPOTENCY_KEY": "evt:Agent:1:toolu_1"})

    assert result.ok, result.stderr
    seen = json.loads(result.stdout)
    assert not set(secrets) & set(seen)
    assert not any(value in result.stdout for value in secrets.values())
    assert seen["PATH"] == os.environ["PATH"] and seen["EDA_PREFIX"] == "tool-prefix"
    assert seen["EDA_IDEMPOTENCY_KEY"] == "evt:Agent:1:toolu_1"


def test_a_script_writing_past_the_output_limit_is_stopped(tmp_path: Path) -> None:
    body = "import sys, time\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    tool = script_tool(tmp_path, body, timeout="20s")

    started = time.monotonic()
    result = run_tool(tool, {}, max_output=100_000)

    assert not result.ok and not result.timed_out and result.exit_code is None
    assert len(result.stdout) == 100_000
    assert "wrote more than 100000 bytes" in result.stderr
    assert time.monotonic() - started < 10


def test_the_shipped_tools_are_recognised_as_own_scripts_through_the_launcher() -> None:
    tools = load_tools(ROOT / "gantz.yaml", default_timeout=30)
    assert own_script(tools["publish_event"]) == "scripts.publish_event"
    assert own_script(tools["get_event_history"]) == "scripts.get_events"
    call = prepare(tools["publish_event"], {"event_type": "a.b", "payload": "{}"}, {})
    assert own_arguments(tools["publish_event"], call.argv)[0] == "a.b"
