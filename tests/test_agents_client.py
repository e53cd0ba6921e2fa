"""agents.backend.shared_client: one Messages API client per process and endpoint."""

from __future__ import annotations

import pytest

from agents.backend import open_backend, shared_client


def test_deliveries_share_one_client_per_endpoint_and_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/one")
    with open_backend() as first, open_backend() as second:
        assert first.client is second.client  # type: ignore[attr-defined]
    assert shared_client() is first.client  # type: ignore[attr-defined]

    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/two")
    other = shared_client()

    assert other is not first.client  # type: ignore[attr-defined]
    assert str(other.base_url).startswith("http://127.0.0.1:9/two")
