"""`TransformersBackend`: the backend interface over any transformers causal LM with `generate`.

A fallback for models the embedded engine does not run, and a baseline for it. One owner
thread runs the model; coroutines enqueue requests and await futures the thread resolves, so
the event loop never blocks on the model. Requests that wait together are batched into one
left-padded `generate` call, grouped by sampling parameters (temperature, top_p, top_k) and
filled with prompts of similar length;
each row is then cut at its own `max_tokens`, first end-of-turn token and stop strings.

Choices and limits:
- The prompt is the tokenizer's chat template with the generation prompt appended. Inline
  `<think>...</think>` is split into `reasoning` and `content` with `split_think`.
- `max_tokens=None` means the rest of the context (`context_length`, else the model's
  `max_position_embeddings`). A prompt with no room left, or prompt + `max_tokens` beyond the
  context, raises `ContextLengthExceeded` (as vLLM does).
- Stop strings are applied after generation (the text is cut before the first match); the
  tokens past it were still generated and are counted.
- A request with a `seed` runs alone, after `torch.manual_seed(seed)` in the owner thread,
  so its output does not depend on what else was queued. Unseeded requests share batches and
  the global torch RNG (seed it once with the `seed` argument for a reproducible order of
  draws; results still depend on how requests happened to be batched).
- No streaming, no prefix caching, no continuous batching: a batch runs until its longest row
  finishes. For throughput use the embedded engine.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._local_tokenizer import LocalTokenizerMixin
from .base import (
    BackendError,
    BackendUnavailable,
    BaseBackend,
    ContextLengthExceeded,
    Generation,
    GenerationRequest,
    InvalidRequest,
    split_think,
)

__all__ = ["TransformersBackend"]

# after a request arrives, wait in steps of _GATHER_S while more keep coming (at most _GATHER_MAX_S)
_GATHER_S, _GATHER_MAX_S = 0.01, 0.1


@dataclass
class _Job:
    request: GenerationRequest
    prompt_ids: list[int]
    limit: int  # new tokens this row may produce
    future: asyncio.Future[Generation]
    loop: asyncio.AbstractEventLoop
    submitted: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple[Any, ...]:
        r = self.request
        return ("seed", id(self)) if r.seed is not None else (r.temperature, r.top_p, r.top_k)


class TransformersBackend(LocalTokenizerMixin, BaseBackend):
    """Serve a transformers causal LM (a checkpoint directory / hub id, or a loaded model).

    `tokenizer` is required when passing a model object. `max_batch_size` caps the rows of one
    `generate` call; `max_concurrency` (default twice that) is what the RSA controller may
    keep in flight, so the next batch is queued while one runs.
    """

    _closed_message = "the transformers backend is closed"
    name = "transformers"

    def __init__(
        self,
        model_or_path: Any,
        *,
        tokenizer: Any = None,
        device: str = "cpu",
        dtype: Any = None,
        max_batch_size: int = 32,
        max_concurrency: int | None = None,
        context_length: int | None = None,
        seed: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if isinstance(model_or_path, (str, Path)):
            path = str(model_or_path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            self.name = f"transformers:{Path(path).name or path}"
        else:
            if tokenizer is None:
                raise ValueError("pass tokenizer=... together with a model object")
            self.model, self.tokenizer = model_or_path, tokenizer
            if dtype is not None:
                self.model.to(dtype)
        self.model.to(device).eval()
        self.device = device
        self.max_batch_size = max_batch_size
        self.max_concurrency = max_concurrency or 2 * max_batch_size
        self.context_length = context_length or getattr(self.model.config, "max_position_embeddings", None)
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) - {None}
        pad = self.tokenizer.pad_token_id
        self._pad = pad if pad is not None else min(self._eos, default=0)
        self._torch = torch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, args=(seed,), name="transformers-backend", daemon=True)
        self._thread.start()

    # -- generation -----------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> Generation:
        self._check_open()
        if not request.messages:
            raise InvalidRequest("a generation request needs at least one message")
        try:
            prompt_ids = list(self.tokenizer.apply_chat_template(
                request.message_dicts(), add_generation_prompt=True, tokenize=True, return_dict=False))
        except Exception as exc:  # a template that rejects these messages (e.g. roles)
            raise InvalidRequest(f"chat template failed: {exc}") from exc
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty")
        limit = self._limit(len(prompt_ids), request.max_tokens)
        loop = asyncio.get_running_loop()
        job = _Job(request, prompt_ids, limit, loop.create_future(), loop)
        self._queue.put(job)
        return await job.future

    def _limit(self, prompt_tokens: int, max_tokens: int | None) -> int:
        ctx = self.context_length
        if ctx is None:
            if max_tokens is None:
                raise InvalidRequest("max_tokens is required: the model has no known context length")
            return max_tokens
        room = ctx - prompt_tokens
        if room < 1 or (max_tokens is not None and max_tokens > room):
            raise ContextLengthExceeded(
                f"prompt of {prompt_tokens} tokens"
                + (f" plus max_tokens={max_tokens}" if max_tokens is not None else "")
                + f" does not fit in the context of {ctx} tokens",
                max_model_len=ctx, prompt_tokens=prompt_tokens, requested_tokens=max_tokens)
        return max_tokens if max_tokens is not None else room

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    # -- the owner thread -----------------------------------------------------------------
    def _serve(self, seed: int | None) -> None:
        if seed is not None:
            self._torch.manual_seed(seed)
        pending: list[_Job] = []
        stopping = False
        while not stopping or pending:
            if not pending:
                job = self._queue.get()
                if job is None:
                    break
                pending.append(job)
                self._gather()
            while True:  # drain whatever else arrived
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                else:
                    pending.append(job)
            if stopping:
                for job in pending:
                    _resolve(job, BackendUnavailable("the transformers backend was closed"))
                break
            # the oldest request goes first, with the requests of its group nearest in prompt
            # length (less padding)
            first = pending[0]
            same = sorted((j for j in pending[1:] if j.key == first.key),
                          key=lambda j: abs(len(j.prompt_ids) - len(first.prompt_ids)))
            batch = [first] + same[: self.max_batch_size - 1]
            chosen = {id(j) for j in batch}
            pending = [j for j in pending if id(j) not in chosen]
            batch = [j for j in batch if not j.future.cancelled()]
            if not batch:
                continue
            try:
                results: list[Generation | BaseException] = list(self._run(batch))
            except Exception as exc:  # the model failed: every row of this batch fails
                results = [BackendError(f"{type(exc).__name__}: {exc}")] * len(batch)
            for job, result in zip(batch, results):
                _resolve(job, result)

    def _gather(self) -> None:
        """Wait while requests keep arriving (callers often submit a burst, e.g. a whole RSA
        stage), up to `_GATHER_MAX_S` or a full batch."""
        deadline = time.perf_counter() + _GATHER_MAX_S
        seen = -1
        while time.perf_counter() < deadline and seen != self._queue.qsize() < self.max_batch_size:
            seen = self._queue.qsize()
            time.sleep(_GATHER_S)

    def _run(self, batch: list[_Job]) -> list[Generation]:
        torch = self._torch
        req = batch[0].request
        if req.seed is not None:
            torch.manual_seed(req.seed)
        width = max(len(j.prompt_ids) for j in batch)
        ids = torch.full((len(batch), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, j in enumerate(batch):  # left padding
            ids[i, width - len(j.prompt_ids):] = torch.tensor(j.prompt_ids)
            mask[i, width - len(j.prompt_ids):] = 1
        sampling: dict[str, Any] = dict(do_sample=False)
        if req.temperature > 0:
            sampling = dict(do_sample=True, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k or 0)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                max_new_tokens=max(j.limit for j in batch), eos_token_id=sorted(self._eos),
                pad_token_id=self._pad, **sampling)
        rows = out[:, width:].tolist()
        return [self._finish(j, row) for j, row in zip(batch, rows)]

    def _finish(self, job: _Job, row: list[int]) -> Generation:
        row = row[: job.limit]
        cut = next((i for i, t in enumerate(row) if t in self._eos), None)
        if cut is not None:
            kept, used, reason = row[:cut], cut + 1, "stop"
        else:
            kept, used = row, len(row)
            reason = "length" if len(row) >= job.limit else "stop"
        text = self.tokenizer.decode(kept, skip_special_tokens=False)
        for stop in job.request.stop:
            at = text.find(stop) if stop else -1
            if at != -1:
                text, reason = text[:at], "stop"
        reasoning, content = split_think(text)
        return Generation(
            content=content, reasoning=reasoning, finish_reason=reason,
            prompt_tokens=len(job.prompt_ids), completion_tokens=used,
            latency_s=time.perf_counter() - job.submitted, token_ids=tuple(kept))


def _resolve(job: _Job, result: Generation | BaseException) -> None:
    def deliver() -> None:
        if job.future.done():
            return
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(deliver)
    except RuntimeError:  # the caller's loop is gone
        pass
