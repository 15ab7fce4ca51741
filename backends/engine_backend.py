"""`EngineBackend`: the backend interface over the embedded ZAYA1 engine (`rsa.backends.zaya1`).

    backend = EngineBackend("path/to/ZAYA1-8B", dtype=torch.bfloat16, device="cuda", max_num_seqs=256)
    result = rsa.solve(problem, backend=backend)

The prompt is the checkpoint's chat template with the generation prompt appended (rendered, then
tokenized without special tokens). `max_tokens=None` means the rest of the context; a prompt that
leaves no room, or prompt + max_tokens beyond it, raises `ContextLengthExceeded` with the numbers.
Inline `<think>...</think>` is split into reasoning and content; when the template opens `<think>`
in the prompt, the output holds only `</think>` (or, cut short, nothing: all of it is reasoning).
torch is imported here, so `rsa.backends` exposes this class lazily.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from ._local_tokenizer import LocalTokenizerMixin
from .base import (
    BackendUnavailable,
    BaseBackend,
    ContextLengthExceeded,
    Generation,
    GenerationRequest,
    InvalidRequest,
    split_think,
)

__all__ = ["EngineBackend"]


class EngineBackend(LocalTokenizerMixin, BaseBackend):
    """Serve a ZAYA1 checkpoint directory in process; `engine_options` go to `rsa.backends.zaya1.LLM`
    (dtype, device, max_num_seqs, max_num_batched_tokens, memory_budget, block_size, max_model_len, seed)."""

    _closed_message = "the engine backend is closed"

    def __init__(self, model_path: str | os.PathLike[str], **engine_options: Any) -> None:
        from .zaya1.async_engine import AsyncLLM

        self.engine = AsyncLLM(model_path, **engine_options)
        if self.engine.tokenizer is None:
            raise ValueError(f"{os.fspath(model_path)} has no tokenizer files: the backend needs a chat template")
        self.tokenizer = self.engine.tokenizer
        self.name = f"zaya1-engine:{os.path.basename(os.path.normpath(os.fspath(model_path)))}"
        self.max_concurrency = self.engine.engine.options.max_num_seqs
        self.context_length = self.engine.max_model_len
        self._ids = itertools.count()
        self._closed = False

    # -- generation -----------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> Generation:
        from .zaya1.sampling_params import SamplingParams
        from .zaya1.tokenizer import opens_think, render_chat

        self._check_open()
        start = time.perf_counter()
        if not request.messages:
            raise InvalidRequest("a generation request needs at least one message")
        try:
            prompt = render_chat(self.tokenizer, request.message_dicts())
        except Exception as exc:  # a template that rejects these messages (e.g. roles)
            raise InvalidRequest(f"chat template failed: {exc}") from exc
        ids = list(self.tokenizer.encode(prompt, add_special_tokens=False))
        if not ids:
            raise InvalidRequest("the prompt is empty")
        room = self.context_length - len(ids)
        if room < 1 or (request.max_tokens is not None and request.max_tokens > room):
            raise ContextLengthExceeded(
                f"prompt of {len(ids)} tokens" + (f" plus max_tokens={request.max_tokens}" if request.max_tokens else "")
                + f" does not fit in the context of {self.context_length} tokens",
                max_model_len=self.context_length, prompt_tokens=len(ids), requested_tokens=request.max_tokens)
        try:
            params = SamplingParams(temperature=request.temperature, top_p=request.top_p, top_k=request.top_k or 0,
                                    max_tokens=request.max_tokens or room, seed=request.seed, stop=request.stop)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        out = await self.engine.generate(ids, params, request_id=("backend", next(self._ids)))
        if out.finish_reason == "abort":
            raise BackendUnavailable("the engine aborted the request")
        text = out.text
        if opens_think(prompt) and "</think>" not in text:
            reasoning, content = (text.strip("\n"), "") if "<think>" not in text else split_think(text)
        else:
            reasoning, content = split_think(text)
        return Generation(content=content, reasoning=reasoning, finish_reason=out.finish_reason,
                          prompt_tokens=out.num_prompt_tokens, completion_tokens=out.num_generated_tokens,
                          latency_s=time.perf_counter() - start, token_ids=out.token_ids)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.engine.aclose()
