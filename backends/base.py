"""The one backend interface the Markovian RSA controller talks to.

A backend turns a chat request into one generation. The controller never knows which backend
it drives: the embedded ZAYA1 engine, a remote OpenAI/vLLM endpoint, a transformers model or a
scripted test double all implement the same four coroutines:

    async generate(request: GenerationRequest) -> Generation
    async tokenize(text: str) -> list[int]          # token-exact tails
    async detokenize(ids: list[int]) -> str
    async aclose() -> None                          # also `async with backend: ...`

Optional attributes a backend may expose (read with getattr, never required):
    max_concurrency: int | None   how many generations it serves at once
    context_length: int | None    the model's context window in tokens
    name: str                     a short label for logs and results

Errors, one shallow tree (all raised by `generate`, `tokenize` and `detokenize`):

    BackendError                      anything a backend could not do
     +-- BackendUnavailable           could not reach the model (connection refused, all
     |                                replicas down, engine stopped)
     +-- BackendTimeout               the request took longer than its deadline
     +-- BackendStatusError(status)   the server answered with an HTTP error status
     +-- InvalidRequest               the request itself is wrong (empty prompt, bad value);
     |                                retrying it unchanged cannot help
     +-- ContextLengthExceeded        prompt + max_tokens do not fit in the context window;
                                      carries the numbers when they are known

A rollout that the model itself cut short is not an error: it is a `Generation` with
`finish_reason == "length"`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "Backend",
    "BackendError",
    "BackendStatusError",
    "BackendTimeout",
    "BaseBackend",
    "BackendUnavailable",
    "ChatMessage",
    "ContextLengthExceeded",
    "FinishReason",
    "Generation",
    "GenerationRequest",
    "InvalidRequest",
    "split_think",
    "build_trace",
]

FinishReason = Literal["stop", "length", "error"]
_ROLES = ("system", "user", "assistant", "tool")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
class BackendError(Exception):
    """Base class of every error a backend raises."""


class BackendUnavailable(BackendError):
    """The model could not be reached (connection refused, engine stopped, all replicas down)."""


class BackendTimeout(BackendError):
    """The request did not finish within its deadline."""


class BackendStatusError(BackendError):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class InvalidRequest(BackendError):
    """The request is wrong in itself; sending it again unchanged cannot succeed."""


class ContextLengthExceeded(InvalidRequest):
    """Prompt plus requested output tokens do not fit in the model's context window."""

    def __init__(
        self,
        message: str,
        *,
        max_model_len: int | None = None,
        prompt_tokens: int | None = None,
        requested_tokens: int | None = None,
    ) -> None:
        super().__init__(message)
        self.max_model_len = max_model_len
        self.prompt_tokens = prompt_tokens
        self.requested_tokens = requested_tokens


# ---------------------------------------------------------------------------------------------
# Wire types
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"message role must be one of {_ROLES}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise TypeError(f"message content must be a string, got {type(self.content).__name__}")

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def _as_messages(messages: Iterable[ChatMessage | Mapping[str, str]]) -> tuple[ChatMessage, ...]:
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, ChatMessage):
            out.append(m)
        elif isinstance(m, Mapping):
            if "role" not in m or "content" not in m:
                raise ValueError(f"messages[{i}] needs 'role' and 'content', got keys {sorted(m)}")
            out.append(ChatMessage(str(m["role"]), m["content"]))
        else:
            raise TypeError(f"messages[{i}] must be a mapping or ChatMessage, got {type(m).__name__}")
    if not out:
        raise ValueError("a generation request needs at least one message")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One chat generation. Immutable; build variants with `dataclasses.replace` / `.replace`.

    `max_tokens=None` means "as many as the context allows" (the backend decides).
    `top_k=None` means no top-k cut. `affinity` groups requests that share a prompt prefix
    (one problem's rollouts) so a multi-replica backend can keep them on one replica.
    """

    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    request_id: str | None = None
    affinity: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", _as_messages(self.messages))
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")

    def replace(self, **changes: object) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def message_dicts(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.messages]


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def build_trace(content: str, reasoning: str | None) -> str:
    """The full trace of one rollout: `<think>\\n{reasoning}\\n</think>\\n\\n{content}`."""
    if reasoning is None:
        return content
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{content}"


def split_think(text: str) -> tuple[str | None, str]:
    """Split inline `<think>...</think>` from generated text into (reasoning, content).

    No `<think>` and no `</think>`: (None, text). An unclosed `<think>` (a rollout cut by
    max_tokens) puts everything after it into reasoning and leaves content empty. A lone
    `</think>` (templates that open the think block in the prompt) splits at it.
    """
    open_at = text.find(THINK_OPEN)
    close_at = text.find(THINK_CLOSE)
    if open_at == -1 and close_at == -1:
        return None, text
    if close_at == -1:  # unclosed think block
        return text[open_at + len(THINK_OPEN):].strip("\n"), ""
    start = open_at + len(THINK_OPEN) if -1 < open_at < close_at else 0
    reasoning = text[start:close_at].strip("\n")
    content = text[close_at + len(THINK_CLOSE):].lstrip("\n")
    return reasoning, content


@dataclass(frozen=True, slots=True)
class Generation:
    """What one rollout produced.

    `reasoning` is None when the model did not think or the server left the thinking inline
    in `content`. `error` holds a message when `finish_reason == "error"`.
    """

    content: str
    reasoning: str | None = None
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    token_ids: tuple[int, ...] | None = field(default=None, repr=False)

    @property
    def trace(self) -> str:
        """The whole output as the model produced it (reasoning block, then the answer)."""
        return build_trace(self.content, self.reasoning)


# ---------------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------------
@runtime_checkable
class Backend(Protocol):
    async def generate(self, request: GenerationRequest) -> Generation: ...

    async def tokenize(self, text: str) -> list[int]: ...

    async def detokenize(self, ids: list[int]) -> str: ...

    async def aclose(self) -> None: ...


class BaseBackend:
    """Convenience base: async context manager and a no-op `aclose`. Subclassing is optional."""

    name: str = "backend"
    max_concurrency: int | None = None
    context_length: int | None = None

    async def aclose(self) -> None:
        return None

    async def __aenter__(self):  # noqa: ANN204 - returns the subclass
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
