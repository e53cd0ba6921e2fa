"""Messages API errors become delivery errors: transient ones retried by us, the rest dead."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest

from agents.backend import MAX_RETRY_AFTER, retry_after
from eda.core import Core
from eda.errors import PermanentError, TransientError
from eda.redis_server import free_port
from tests.agent_fixtures import make_agent, stored_event
from tests.messages_api import MessagesAPI, error, message, messages_api, text, tool_use

__all__ = ["make_agent", "messages_api"]  # fixtures used by the tests below


def test_a_429_is_transient_with_its_retry_after_and_the_retry_succeeds(
    messages_api: MessagesAPI, make_agent: Any, core: Core
) -> None:
    handler = make_agent()
    script = messages_api.script(
        error(429, "Number of request tokens has exceeded your rate limit.", {"retry-after": "7"}),
        message(text("Handled.")),
    )
    event = stored_event(core, "alert.triggered", {})

    with pytest.raises(TransientError) as raised:
        handler(event)

    assert raised.value.retry_after is not None and raised.value.retry_after >= 7
    assert "rate_limit_error" in str(raised.value) and "exceeded your rate limit" in str(
        raised.value
    )
    assert len(script.requests) == 1  # the SDK did not retry on its own
    assert raised.value.outcome["backend"] == "anthropic"  # type: ignore[attr-defined]
    assert raised.value.outcome["turns"] == 0  # type: ignore[attr-defined]
    assert handler(event)["outcome"] == "completed"  # what the delivery's retry does
    assert len(script.requests) == 2


def test_retry_after_ms_is_preferred_to_retry_after(
    messages_api: MessagesAPI, make_agent: Any, core: Core
) -> None:
    handler = make_agent()
    messages_api.script(error(429, "slow down", {"retry-after-ms": "1500", "retry-after": "9"}))

    with pytest.raises(TransientError) as raised:
        handler(stored_event(core, "alert.triggered", {}))

    assert raised.value.retry_after == 1.5


@pytest.mark.parametrize("status", [529, 500, 503])
def test_overload_and_server_errors_are_transient_and_not_retried_by_the_sdk(
    status: int, messages_api: MessagesAPI, make_agent: Any, core: Core
) -> None:
    handler = make_agent()
    script = messages_api.script(error(status, "Overloaded"), error(status, "Overloaded"))

    with pytest.raises(TransientError, match=f"Messages API {status}"):
        handler(stored_event(core, "alert.triggered", {}))

    assert len(script.requests) == 1 and script.remaining == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_requests_the_api_refuses_are_permanent_with_the_apis_message(
    status: int, messages_api: MessagesAPI, make_agent: Any, core: Core
) -> None:
    handler = make_agent()
    script = messages_api.script(error(status, f"the API says no ({status})"))

    with pytest.raises(PermanentError) as raised:
        handler(stored_event(core, "alert.triggered", {}))

    assert f"the API says no ({status})" in str(raised.value)
    assert len(script.requests) == 1


def test_an_unreachable_api_is_transient(
    make_agent: Any, core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{free_port()}")
    handler = make_agent()

    with pytest.raises(TransientError, match="unreachable"):
        handler(stored_event(core, "alert.triggered", {}))


def test_an_error_mid_conversation_carries_the_work_done_so_far(
    messages_api: MessagesAPI, make_agent: Any, core: Core
) -> None:
    handler = make_agent(tools=["tests.agent_tools:lookup_service"])
    messages_api.script(
        message(tool_use("lookup_service", {"service": "checkout"}), input_tokens=300),
        error(529, "Overloaded"),
    )

    with pytest.raises(TransientError) as raised:
        handler(stored_event(core, "alert.triggered", {}))

    outcome: dict[str, Any] = raised.value.outcome  # type: ignore[attr-defined]
    assert outcome["turns"] == 1 and outcome["usage"]["input_tokens"] == 300
    assert [call["name"] for call in outcome["tool_calls"]] == ["lookup_service"]
    assert outcome["outcome"] == "failed"


def test_retry_after_reads_seconds_milliseconds_and_http_dates_within_a_bound() -> None:
    now = time.time()
    in_thirty = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after({"retry-after": "2.5"}) == 2.5
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert 28 <= (retry_after({"retry-after": in_thirty}, now=now) or 0) <= 30
    assert retry_after({"retry-after": "86400"}) == MAX_RETRY_AFTER
    assert retry_after({"retry-after": "-3"}) == 0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None
