"""eda.http_tools: the ``http`` form of a gantz.yaml tool, against a real local HTTP server."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from eda.errors import InvalidInput
from eda.http_tools import extract_json
from eda.tools import Tool, load_tools, run_tool


class Echo(BaseHTTPRequestHandler):
    """Answers with what it received; /missing is a 404, /slow answers late."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(2)
        length = int(self.headers.get("Content-Length") or 0)
        report = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": self.rfile.read(length).decode(),
            "data": {"items": [{"name": "first"}, {"name": "second"}]},
        }
        status = 404 if self.path.startswith("/missing") else 200
        payload = json.dumps(report).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout test)
            pass

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def http_tool(tmp_path: Path, http: str) -> Tool:
    text = f"""\
        tools:
          - name: call
            description: Calls the echo server.
            parameters:
              - {{name: id, type: string, required: true}}
              - {{name: note, type: string}}
            http: {http}
        """
    path = tmp_path / "gantz.yaml"
    path.write_text(textwrap.dedent(text))
    return load_tools(path)["call"]


def test_a_get_substitutes_the_url_and_returns_the_body(server: str, tmp_path: Path) -> None:
    tool = http_tool(tmp_path, f'{{url: "{server}/items/{{{{id}}}}?note={{{{note}}}}"}}')
    result = run_tool(tool, {"id": "a b/../admin"})
    assert (result.ok, result.exit_code, result.stderr) == (True, 0, "")
    report = json.loads(result.stdout)
    assert report["method"] == "GET"
    # an argument cannot leave its place in the URL; the one not sent stays literal
    assert report["path"] == "/items/a%20b%2F..%2Fadmin?note={{note}}"


def test_a_post_sends_the_body_as_json_with_the_headers(server: str, tmp_path: Path) -> None:
    http = (
        f'{{url: "{server}/things", method: POST, headers: {{X-Id: "{{{{id}}}}"}}, '
        'body: \'{"id": "{{id}}"}\'}'
    )
    report = json.loads(run_tool(http_tool(tmp_path, http), {"id": "42"}).stdout)
    assert (report["method"], report["body"]) == ("POST", '{"id": "42"}')
    assert report["headers"]["content-type"] == "application/json"
    assert report["headers"]["x-id"] == "42"


def test_extract_json_narrows_the_result(server: str, tmp_path: Path) -> None:
    tool = http_tool(tmp_path, f'{{url: "{server}/x", extract_json: "data.items[1].name"}}')
    assert run_tool(tool, {"id": "1"}).stdout == "second"


def test_a_status_of_400_or_more_is_a_failure_with_the_body(server: str, tmp_path: Path) -> None:
    result = run_tool(http_tool(tmp_path, f'{{url: "{server}/missing/{{{{id}}}}"}}'), {"id": "1"})
    assert (result.ok, result.exit_code) == (False, 1)
    assert "HTTP 404" in result.stderr
    assert json.loads(result.stdout)["path"] == "/missing/1"


def test_the_time_limit_applies(server: str, tmp_path: Path) -> None:
    tool = http_tool(tmp_path, f'{{url: "{server}/slow", timeout: 200ms}}')
    started = time.monotonic()
    result = run_tool(tool, {"id": "1"})
    assert time.monotonic() - started < 1.5
    assert (result.ok, result.exit_code, result.timed_out) == (False, None, True)


def test_an_unreachable_host_is_a_failed_result(tmp_path: Path) -> None:
    result = run_tool(
        http_tool(tmp_path, '{url: "http://127.0.0.1:9/x", timeout: 2s}'), {"id": "1"}
    )
    assert (result.ok, result.exit_code) == (False, None)
    assert "request to http://127.0.0.1:9/x failed" in result.stderr


def test_a_line_break_in_a_header_is_refused(server: str, tmp_path: Path) -> None:
    tool = http_tool(tmp_path, f'{{url: "{server}/x", headers: {{X-Id: "{{{{id}}}}"}}}}')
    with pytest.raises(InvalidInput) as caught:
        run_tool(tool, {"id": "1\r\nX-Evil: yes"})
    assert caught.value.field == "X-Id"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("a", "1"), ("b.c", "[\n  1,\n  2\n]"), ("b.c[1]", "2"), ("d", "null"), ("nope", None)],
)
def test_extract_json_follows_gantz_paths(path: str, expected: str | None) -> None:
    text = '{"a": "1", "b": {"c": [1, 2]}, "d": null}'
    assert extract_json(text, path) == (expected if expected is not None else text)
