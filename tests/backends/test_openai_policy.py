"""The remote backend's building blocks: failure policy, context-error parsing, SSE, replicas."""

from __future__ import annotations

import email.utils

import pytest

from rsa.backends import BackendStatusError, BackendUnavailable
from rsa.backends._replicas import ReplicaPool, normalize_base_url
from rsa.backends._retry import (
    MAX_FAILOVERS,
    Retry,
    RetryPolicy,
    is_retryable_status,
    parse_context_error,
    parse_retry_after,
    retry_loop,
)
from rsa.backends._sse import iter_sse

# -- context-length wordings (ecosystem notes 2.4, plus OpenAI, SGLang and TGI) ------------------
WORDINGS = [
    ("This model's maximum context length is 32768 tokens. However, you requested 8192 output tokens "
     "and your prompt contains at least 24577 input tokens, for a total of at least 32769 tokens. Please "
     "reduce the length of the input prompt or the number of requested output tokens.", (32768, 24577, 8192)),
    ("This model's maximum context length is 32768 tokens. However, you requested 8192 output tokens and "
     "your prompt contains at least 24577 input tokens, for a total of at least 32769 tokens. "
     "(parameter=input_tokens, value=24577)", (32768, 24577, 8192)),
    ("This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (3000 in the "
     "messages, 2000 in the completion). Please reduce the length of the messages or completion.",
     (4096, 3000, 2000)),
    ("max_completion_tokens=131072 cannot be greater than max_model_len=max_total_tokens=65536",
     (65536, None, 131072)),
    ("max_tokens=9000 cannot be greater than max_model_len=8192", (8192, None, 9000)),
    ("'max_tokens' or 'max_completion_tokens' is too large: 5000. This model's maximum context length is "
     "4096 tokens and your request has 100 input tokens (5000 > 4096 - 100).", (4096, 100, 5000)),
    ("This model's maximum context length is 2048 tokens. However, your request has 3000 input tokens. "
     "Please reduce the length of the input messages.", (2048, 3000, None)),
    ("Requested token count exceeds the model's maximum context length of 4096 tokens. You requested a "
     "total of 5000 tokens: 3000 tokens from the input messages and 2000 tokens for the completion.",
     (4096, 3000, 2000)),
    ("`inputs` tokens + `max_new_tokens` must be <= 4096. Given: 3000 `inputs` tokens and 2000 "
     "`max_new_tokens`", (4096, 3000, 2000)),
]


@pytest.mark.parametrize("message, numbers", WORDINGS)
def test_context_error_wordings_are_parsed(message, numbers):
    parsed = parse_context_error(message)
    assert parsed is not None
    assert (parsed.max_model_len, parsed.prompt_tokens, parsed.requested_tokens) == numbers


@pytest.mark.parametrize("message", [
    "temperature must be non-negative",
    "messages: Field required",
    "The model `x` does not exist.",
])
def test_other_400s_are_not_context_errors(message):
    assert parse_context_error(message) is None


# -- Retry-After and backoff ---------------------------------------------------------------------
def test_retry_after_seconds_date_and_ms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(7.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_grows_is_capped_and_jittered_down_only():
    policy = RetryPolicy()  # the house defaults: 0.5 s doubling, capped at 8 s, 25 % jitter
    for retry, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [policy.delay(retry) for _ in range(50)]
        assert all(0.75 * base <= d <= base for d in delays), (retry, min(delays), max(delays))
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.delay(0, retry_after=600.0) == policy.retry_after_max
    assert [policy.cooldown(n) for n in (1, 2, 3, 10)] == [30.0, 60.0, 120.0, 300.0]


def test_retryable_statuses():
    assert [s for s in (400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504) if is_retryable_status(s)] \
        == [408, 409, 429, 500, 502, 503, 504]


def test_policy_rejects_bad_values():
    with pytest.raises(ValueError):
        RetryPolicy(backoff_initial=-1)
    with pytest.raises(ValueError):
        RetryPolicy(backoff_jitter=2)


# -- the retry helper ----------------------------------------------------------------------------
async def test_retry_loop_sleeps_by_policy_then_raises_the_final_error():
    slept: list[float] = []
    calls = 0

    async def sleep(s: float) -> None:
        slept.append(s)

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise Retry(BackendStatusError(503, "busy"), retry_after=0.3 if calls == 2 else None)

    policy = RetryPolicy(backoff_jitter=0.0)
    with pytest.raises(BackendStatusError) as info:
        await retry_loop(attempt, max_retries=3, policy=policy, sleep=sleep)
    assert info.value.status == 503
    assert calls == 4
    assert slept == [0.5, 0.3, 2.0]  # backoff, then Retry-After honoured, then backoff


async def test_retry_loop_returns_after_transient_failures_and_failovers_are_free():
    outcomes = [Retry(BackendUnavailable("refused"), failover=True), Retry(BackendUnavailable("reset")), "ok"]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async def attempt() -> str:
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    assert await retry_loop(attempt, max_retries=1, policy=RetryPolicy(), sleep=sleep) == "ok"
    assert len(slept) == 1  # the failover did not wait and did not spend the one retry


async def test_failovers_are_bounded():
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise Retry(BackendUnavailable("refused"), failover=True)

    async def sleep(s: float) -> None:
        return None

    with pytest.raises(BackendUnavailable):
        await retry_loop(attempt, max_retries=0, policy=RetryPolicy(), sleep=sleep)
    assert calls == MAX_FAILOVERS + 1


# -- SSE -----------------------------------------------------------------------------------------
async def _lines(text: str):
    for line in text.splitlines(keepends=True):
        yield line


async def test_sse_reader_handles_comments_events_multiline_and_a_missing_final_blank_line():
    text = (": keep-alive\n\n"
            "data: {\"a\": 1}\n\n"
            "event: error\ndata: {\"error\": \"x\"}\n\n"
            "data: line1\ndata: line2\r\n\r\n"
            "id: 7\nretry: 100\ndata:[DONE]")
    events = [e async for e in iter_sse(_lines(text))]
    assert events == [("message", '{"a": 1}'), ("error", '{"error": "x"}'), ("message", "line1\nline2"),
                      ("message", "[DONE]")]


# -- URLs and replicas ---------------------------------------------------------------------------
@pytest.mark.parametrize("url, root", [
    ("http://h:8000/v1", "http://h:8000"),
    ("http://h:8000/v1/", "http://h:8000"),
    ("http://h:8000", "http://h:8000"),
    ("h:8000", "http://h:8000"),
    ("https://gw.example/proxy/v1", "https://gw.example/proxy"),
])
def test_base_urls_are_normalised(url, root):
    assert normalize_base_url(url) == (root, root + "/v1")


def test_bad_base_urls_are_rejected():
    with pytest.raises(ValueError):
        normalize_base_url("ftp://h/v1")
    with pytest.raises(ValueError):
        ReplicaPool(["http://a", "http://a/v1"], RetryPolicy())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pool_prefers_least_in_flight_and_keeps_affinity():
    pool = ReplicaPool(["http://a", "http://b"], RetryPolicy(), clock=Clock())
    a, b = pool.replicas
    with pool.lease(pool.pick("p1")) as first:
        assert first is a
        assert pool.pick("p2") is b  # a is busy
        with pool.lease(pool.pick("p1")):  # p1 sticks to a although a is the busier one
            assert a.in_flight == 2
    assert pool.pick("p1") is a and pool.pick("p2") is b
    assert pool.pick() is b  # least served on a tie of in-flight counts


def test_pool_cools_a_failing_replica_down_and_moves_its_keys():
    clock = Clock()
    pool = ReplicaPool(["http://a", "http://b"], RetryPolicy(replica_cooldown=30, replica_cooldown_max=100), clock=clock)
    a, b = pool.replicas
    assert pool.pick("p1") is a
    pool.connect_failed(a)
    assert pool.pick("p1") is b and pool.pinned("p1") is b
    assert pool.pick() is b
    clock.now += 31
    assert pool.healthy(a)
    pool.connect_failed(a)  # second consecutive failure: 60 s
    clock.now += 59
    assert not pool.healthy(a)
    clock.now += 2
    assert pool.healthy(a)
    pool.reachable(a)
    assert a.failures == 0
    assert pool.pick("p1") is b  # the key stays where it moved


def test_pool_with_every_replica_down_still_tries_the_one_back_soonest():
    clock = Clock()
    pool = ReplicaPool(["http://a", "http://b"], RetryPolicy(), clock=clock)
    a, b = pool.replicas
    pool.connect_failed(b)
    clock.now += 1
    pool.connect_failed(a)
    assert not pool.has_healthy()
    assert pool.pick() is b
