"""`ScriptedBackend`: a deterministic, public test double for the backend interface.

It answers each request with a callable you give it, after a simulated latency, so the
controller (and your own code built on it) can be tested without a model. Its tokenizer is one
token per whitespace-separated word: `tokenize("a b  c")` has 3 ids and `detokenize` joins the
words back with single spaces, so a "tail of N tokens" is the last N words. Word ids are
assigned on first sight and are stable for the life of the object.

Not covered: streaming, token-level timing, chat templates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Union

from .base import BaseBackend, BackendUnavailable, Generation, GenerationRequest, split_think

__all__ = ["ScriptedBackend"]

Response = Union[str, Generation]
Respond = Callable[[GenerationRequest], Union[Response, Awaitable[Response]]]


class ScriptedBackend(BaseBackend):
    """Answer requests with `respond(request)` (a `str` or a `Generation`, sync or async).

    `latency` is seconds, or a callable of the request returning seconds, slept with
    `asyncio.sleep` before answering. `max_concurrency` bounds how many requests are served at
    once (others queue), like a server with a fixed number of slots. `requests` records every
    request in arrival order; `busy_seconds` sums the simulated service time.

    A `str` response is split on `<think>...</think>` into reasoning and content; its token
    counts come from the word tokenizer.
    """

    name = "scripted"

    def __init__(
        self,
        respond: Respond,
        *,
        latency: float | Callable[[GenerationRequest], float] = 0.0,
        max_concurrency: int | None = None,
        context_length: int | None = None,
    ) -> None:
        self._respond = respond
        self._latency = latency
        self.max_concurrency = max_concurrency
        self.context_length = context_length
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._vocab: dict[str, int] = {}
        self._words: list[str] = []
        self.requests: list[GenerationRequest] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.busy_seconds = 0.0
        self._closed = False

    # -- tokenizer ------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            if word not in self._vocab:
                self._vocab[word] = len(self._words)
                self._words.append(word)
            ids.append(self._vocab[word])
        return ids

    async def tokenize(self, text: str) -> list[int]:
        return self._ids(text)

    async def detokenize(self, ids: list[int]) -> str:
        return " ".join(self._words[i] for i in ids)

    # -- generation -----------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> Generation:
        if self._closed:
            raise BackendUnavailable("ScriptedBackend is closed")
        if self._slots is None:
            return await self._serve(request)
        async with self._slots:
            return await self._serve(request)

    async def _serve(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        start = time.perf_counter()
        try:
            delay = self._latency(request) if callable(self._latency) else self._latency
            if delay > 0:
                await asyncio.sleep(delay)
            out = self._respond(request)
            if asyncio.iscoroutine(out) or isinstance(out, Awaitable):
                out = await out
        finally:
            self.in_flight -= 1
            self.busy_seconds += time.perf_counter() - start
        latency = time.perf_counter() - start
        if isinstance(out, Generation):
            return out
        if not isinstance(out, str):
            raise TypeError(f"respond() must return str or Generation, got {type(out).__name__}")
        reasoning, content = split_think(out)
        prompt = " ".join(m.content for m in request.messages)
        completion = self._ids(out)
        finish = "stop"
        if request.max_tokens is not None and len(completion) > request.max_tokens:
            kept = " ".join(self._words[i] for i in completion[: request.max_tokens])
            reasoning, content = split_think(kept)
            completion = completion[: request.max_tokens]
            finish = "length"
        return Generation(
            content=content,
            reasoning=reasoning,
            finish_reason=finish,
            prompt_tokens=len(self._ids(prompt)),
            completion_tokens=len(completion),
            latency_s=latency,
        )

    async def aclose(self) -> None:
        self._closed = True
