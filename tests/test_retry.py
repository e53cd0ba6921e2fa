"""The retry policy: pure functions of its data, narrowed per agent and per route."""

from __future__ import annotations

import pytest

from eda.errors import PermanentError, TransientError
from eda.retry import RetryOverride, RetryPolicy
from eda.settings import Settings


def test_the_default_policy_comes_from_the_settings(settings: Settings) -> None:
    policy = RetryPolicy.from_settings(settings)
    assert (policy.max_retries, policy.backoff, policy.backoff_max) == (
        settings.max_retries,
        settings.retry_backoff,
        settings.retry_backoff_max,
    )


def test_backoff_grows_exponentially_under_full_jitter_and_a_cap() -> None:
    policy = RetryPolicy(backoff=0.1, backoff_max=0.5)
    for retries, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.5), (9, 0.5), (10_000, 0.5)]:
        delays = [policy.delay(retries) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # full jitter spreads over the whole range


def test_without_jitter_the_backoff_is_the_exponential_itself() -> None:
    policy = RetryPolicy(backoff=0.1, backoff_max=0.5, jitter=False)
    assert [policy.delay(n) for n in range(4)] == [0.1, 0.2, 0.4, 0.5]


def test_backoff_honours_a_longer_retry_after_but_never_past_the_cap() -> None:
    policy = RetryPolicy(backoff=0.01, backoff_max=5)
    assert policy.delay(0, retry_after=2.0) >= 2.0
    assert policy.delay(0, retry_after=60.0) == 5


def test_a_policy_gives_up_on_a_permanent_error_or_an_empty_budget() -> None:
    policy = RetryPolicy(max_retries=2, permanent=("KeyError",))
    assert policy.gives_up(PermanentError("bad"), 0)
    assert policy.gives_up(KeyError("x"), 0)
    assert not policy.gives_up(TransientError("later"), 1)
    assert not policy.gives_up(RuntimeError("unclassified"), 1)
    assert policy.gives_up(RuntimeError("unclassified"), 2)


def test_permanent_names_match_a_class_its_bases_or_its_full_name() -> None:
    class QuotaError(LookupError):
        pass

    assert RetryPolicy(permanent=("LookupError",)).is_permanent(QuotaError())
    assert RetryPolicy(permanent=("builtins.KeyError",)).is_permanent(KeyError())
    assert not RetryPolicy(permanent=("KeyError",)).is_permanent(ValueError())


def test_an_override_narrows_only_what_it_sets_and_adds_permanent_names() -> None:
    base = RetryPolicy(max_retries=5, backoff=2.0, permanent=("KeyError",))
    narrowed = base.narrowed(RetryOverride(max_retries=1, permanent=("ValueError",)))
    assert (narrowed.max_retries, narrowed.backoff) == (1, 2.0)
    assert narrowed.permanent == ("KeyError", "ValueError")
    assert base.narrowed(None) is base


@pytest.mark.parametrize("bad", [{"max_retries": -1}, {"backoff": 0}, {"tries": 3}])
def test_a_bad_override_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryOverride.model_validate(bad)
