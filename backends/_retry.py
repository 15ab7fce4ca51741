"""The remote backend's failure policy, in one place: timeouts, retries, backoff, Retry-After,
replica cool-down, and the parser for context-length rejections.

Policy (the constants below; `RetryPolicy` overrides them per backend, e.g. fast in tests):

- separate connect and read timeouts; the read timeout is the longest silence between two
  bytes, so a streamed generation may run far longer than it;
- up to `MAX_RETRIES` retries on connection errors, timeouts, dropped streams and HTTP 408, 409,
  429 and 5xx, after `min(BACKOFF_INITIAL * 2**n, BACKOFF_MAX)` seconds less up to
  `BACKOFF_JITTER` of it, or after the server's `Retry-After` (capped at `RETRY_AFTER_MAX`);
- never a retry of 400 and other 4xx: a context-length 400 is parsed and fixed once by the
  caller (shrinking max_tokens), everything else fails at once;
- a replica that refuses connections is skipped for `REPLICA_COOLDOWN` seconds, doubling on each
  further failure up to `REPLICA_COOLDOWN_MAX`.

Not covered: an overall deadline per request (wrap the call in `asyncio.timeout`).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from .base import BackendError

__all__ = [
    "RetryPolicy",
    "Retry",
    "ContextNumbers",
    "retry_loop",
    "is_retryable_status",
    "parse_retry_after",
    "parse_context_error",
]

# ---------------------------------------------------------------------------------------------
# Failure policy constants
# ---------------------------------------------------------------------------------------------
CONNECT_TIMEOUT = 5.0  # seconds to open a TCP connection
READ_TIMEOUT = 600.0  # seconds of silence tolerated; streaming sends every token, so plenty
WRITE_TIMEOUT = 60.0
MAX_RETRIES = 2
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 8.0
BACKOFF_JITTER = 0.25  # each delay is shortened by up to this fraction, at random
RETRY_AFTER_MAX = 60.0  # a longer Retry-After is clamped to this
RETRY_STATUSES = frozenset({408, 409, 429})  # plus every 5xx
REPLICA_COOLDOWN = 30.0
REPLICA_COOLDOWN_MAX = 300.0
MAX_FAILOVERS = 8  # free immediate retries on another replica, per call

DEFAULT_TIMEOUT = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT, write=WRITE_TIMEOUT)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Timing of retries and replica cool-down. The defaults are the constants above."""

    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX
    backoff_jitter: float = BACKOFF_JITTER
    retry_after_max: float = RETRY_AFTER_MAX
    replica_cooldown: float = REPLICA_COOLDOWN
    replica_cooldown_max: float = REPLICA_COOLDOWN_MAX

    def __post_init__(self) -> None:
        for name in ("backoff_initial", "backoff_max", "retry_after_max", "replica_cooldown",
                     "replica_cooldown_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.backoff_jitter <= 1:
            raise ValueError(f"backoff_jitter must be in [0, 1], got {self.backoff_jitter}")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        base = min(self.backoff_initial * 2**retry, self.backoff_max)
        return base * (1.0 - self.backoff_jitter * random.random())

    def cooldown(self, failures: int) -> float:
        """Seconds a replica is skipped after its `failures`-th consecutive connection failure."""
        return min(self.replica_cooldown * 2 ** max(failures - 1, 0), self.replica_cooldown_max)


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES or 500 <= status <= 599


def parse_retry_after(headers: httpx.Headers | dict[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(when.timestamp() - now, 0.0)


# ---------------------------------------------------------------------------------------------
# One retry helper
# ---------------------------------------------------------------------------------------------
class Retry(Exception):
    """Raised by an attempt whose failure is transient; `error` is what the caller gets when the
    retries run out. `failover=True`: another replica can take the request now, with no wait
    and without spending a retry."""

    def __init__(self, error: BackendError, *, retry_after: float | None = None,
                 failover: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.failover = failover


T = TypeVar("T")


async def retry_loop(
    attempt: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Run `attempt` until it returns, raises a non-`Retry` error, or the retries run out."""
    retries = failovers = 0
    while True:
        try:
            return await attempt()
        except Retry as r:
            if r.failover and failovers < MAX_FAILOVERS:
                failovers += 1
                continue
            if retries >= max_retries:
                raise r.error from r.__cause__
            await sleep(policy.delay(retries, r.retry_after))
            retries += 1


# ---------------------------------------------------------------------------------------------
# Context-length rejections (ecosystem notes 2.4)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ContextNumbers:
    """What a context-length error told us; None where the wording does not say."""

    max_model_len: int | None
    prompt_tokens: int | None
    requested_tokens: int | None


_IS_CONTEXT_ERROR = re.compile(
    r"context length|context window|max_model_len|max_total_tokens|maximum context"
    r"|max_new_tokens.{0,4} must be|tokens \+ .{0,4}max_new_tokens",
    re.IGNORECASE,
)
_MAX_LEN = [
    r"maximum context length (?:is|of) (\d+)",
    r"max_model_len\s*=\s*(?:[a-z_]+\s*=\s*)*(\d+)",
    r"context (?:length|window) (?:is|of) (\d+)",
    r"must be <=\s*(\d+)",
]
_PROMPT = [
    r"prompt contains at least (\d+)",
    r"(\d+) in the messages",
    r"(\d+) tokens from the input",
    r"request has (\d+) input tokens",
    r"parameter=input_tokens, value=(\d+)",
    r"given:\s*(\d+) .?inputs.? tokens",
    r"(\d+) input tokens",
]
_REQUESTED = [
    r"requested (\d+) output tokens",
    r"(\d+) in the completion",
    r"(\d+) tokens for the completion",
    r"is too large: (\d+)",
    r"(?:max_completion_tokens|max_tokens|max_new_tokens)\s*=\s*(\d+)",
    r"and (\d+) .?max_new_tokens",
]


def _first(patterns: list[str], text: str) -> int | None:
    for p in patterns:
        m = re.search(p, text, re.IGNORECASE)
        if m:
            return int(m.group(1))
    return None


def parse_context_error(message: str) -> ContextNumbers | None:
    """The numbers in a "prompt + output exceed the context" message, or None if it is not one.

    Tolerates the vLLM wordings of several releases, OpenAI's, SGLang's and TGI's.
    """
    if not _IS_CONTEXT_ERROR.search(message):
        return None
    return ContextNumbers(
        max_model_len=_first(_MAX_LEN, message),
        prompt_tokens=_first(_PROMPT, message),
        requested_tokens=_first(_REQUESTED, message),
    )
