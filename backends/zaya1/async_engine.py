"""`AsyncLLM`: the engine behind one owner thread, for asyncio callers (the backend, an HTTP server).

Exactly one thread steps the engine. Coroutines never touch it: `generate` / `stream` validate the
request (pure checks), put an "add" message in the inbox and await outputs the thread hands to their
event loop with `call_soon_threadsafe`. Cancelling the awaiting coroutine (or closing the stream)
sends an "abort". If a step raises, every request in flight fails with that error and the engine is
emptied, so later requests are still served. `metrics()` reads a snapshot the thread publishes.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator, Sequence as Seq
from typing import Any

from ..base import BackendError, BackendUnavailable
from .engine import LLM, EngineMetrics, RequestOutput
from .sampling_params import SamplingParams


class _Sink:
    """Where one request's outputs go: an asyncio queue on the caller's loop."""

    __slots__ = ("loop", "queue")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()

    def put(self, item: RequestOutput | BaseException) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            return True
        except RuntimeError:  # the caller's loop is closed
            return False


class AsyncLLM:
    def __init__(self, model: Any, **engine_options: Any) -> None:
        self.engine = LLM(model, **engine_options)  # built here; touched only by the owner thread from now on
        self.tokenizer, self.max_model_len = self.engine.tokenizer, self.engine.max_model_len
        self._inbox: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
        self._sinks: dict[Any, _Sink] = {}
        self._ids = itertools.count()
        self._metrics = self.engine.metrics()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="zaya1-engine", daemon=True)
        self._thread.start()

    # ---- callers (any event loop) ---------------------------------------------------------
    def metrics(self) -> EngineMetrics:
        return self._metrics

    @property
    def is_alive(self) -> bool:
        """Open and its owner thread running (a health check)."""
        return not self._closed and self._thread.is_alive()

    def cache_info(self) -> dict[str, int]:
        return self.engine.cache_info()  # immutable after construction

    async def generate(self, prompt: str | Seq[int], params: SamplingParams | None = None,
                       request_id: Any = None) -> RequestOutput:
        """Run one request to completion; returns its final output."""
        final = None
        async for out in self._submit(prompt, params, request_id, stream=False):
            final = out
        assert final is not None and final.finished
        return final

    def stream(self, prompt: str | Seq[int], params: SamplingParams | None = None,
               request_id: Any = None) -> AsyncIterator[RequestOutput]:
        """Yield an output per new token (with `new_token_ids`, `new_text`), the last one `finished`."""
        return self._submit(prompt, params, request_id, stream=True)

    async def _submit(self, prompt: str | Seq[int], params: SamplingParams | None, request_id: Any,
                      stream: bool) -> AsyncIterator[RequestOutput]:
        if self._closed:
            raise BackendUnavailable("the engine is closed")
        params = params if params is not None else SamplingParams()
        ids = self.engine.encode(prompt)
        self.engine.validate(ids, params)
        rid = ("async", next(self._ids)) if request_id is None else request_id
        sink = _Sink()
        self._inbox.put(("add", (rid, ids, params, stream), sink))
        done = False
        try:
            while not done:
                item = await sink.queue.get()
                if isinstance(item, BaseException):
                    done = True
                    raise item
                done = item.finished
                if stream or done:
                    yield item
        finally:
            if not done:
                self._inbox.put(("abort", rid, None))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(("stop", None, None))
        await asyncio.to_thread(self._thread.join)

    # ---- the owner thread -----------------------------------------------------------------
    def _loop(self) -> None:
        engine = self.engine
        while True:
            try:
                message = self._inbox.get(block=not engine.has_unfinished())
            except queue.Empty:
                message = None
            while message is not None:
                if not self._handle(*message):
                    return
                try:
                    message = self._inbox.get_nowait()
                except queue.Empty:
                    message = None
            if engine.has_unfinished():
                self._step()
            self._metrics = engine.metrics()

    def _handle(self, kind: str, payload: Any, sink: _Sink | None) -> bool:
        if kind == "add":
            rid, ids, params, stream = payload
            if rid in self._sinks:
                sink.put(BackendError(f"request id {rid!r} is already running"))
                return True
            try:
                self.engine.add_request(ids, params, rid, stream=stream)
            except Exception as exc:  # noqa: BLE001 - delivered to the one caller it concerns
                sink.put(exc)
            else:
                self._sinks[rid] = sink
        elif kind == "abort":
            if self._sinks.pop(payload, None) is not None:
                self.engine.abort(payload)
        else:  # stop: fail whatever is still in flight
            self._fail_all(BackendUnavailable("the engine was closed"))
            return False
        return True

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:  # noqa: BLE001 - the model failed: every request in flight fails
            self._fail_all(BackendError(f"engine step failed: {type(exc).__name__}: {exc}"))
            return
        self._metrics = self.engine.metrics()  # before the outputs, so a caller sees its own request counted
        for out in outputs:
            sink = self._sinks.get(out.request_id)
            if sink is None:
                continue
            if out.finished:
                del self._sinks[out.request_id]
            if not sink.put(out) and not out.finished:  # nobody is listening any more
                del self._sinks[out.request_id]
                self.engine.abort(out.request_id)

    def _fail_all(self, exc: BaseException) -> None:
        for rid, sink in list(self._sinks.items()):
            self.engine.abort(rid)
            sink.put(exc)
        self._sinks.clear()
